from rest_framework.routers import SimpleRouter

from .api import TemplateViewSet

router = SimpleRouter(use_regex_path=False)
router.register("templates", TemplateViewSet, basename="template")

urlpatterns = router.urls
