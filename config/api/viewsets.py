from rest_framework import viewsets


class OwnedModelViewSet(viewsets.ModelViewSet):
    """CRUD over the rows the requesting user owns; anyone else's row is simply not there (404)."""

    owner_field = "owner"

    def get_queryset(self):
        queryset = super().get_queryset()
        if getattr(self, "swagger_fake_view", False):
            return queryset.none()
        return queryset.filter(**{self.owner_field: self.request.user})

    def perform_create(self, serializer):
        serializer.save(**{self.owner_field: self.request.user})
