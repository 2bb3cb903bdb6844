from rest_framework.routers import SimpleRouter

from .api import AppViewSet, LicenseViewSet

router = SimpleRouter()
router.register("apps", AppViewSet, basename="app")
router.register("licenses", LicenseViewSet, basename="license")

urlpatterns = router.urls
