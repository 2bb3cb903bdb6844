from rest_framework import serializers

# Sent by the browsable API's HTML forms alongside the data.
FORM_CONTROL_FIELDS = {"csrfmiddlewaretoken", "_method", "_content", "_content_type"}


class StrictFieldsMixin:
    # Refuses fields the serializer does not know, instead of silently dropping them. (A comment,
    # not a docstring: drf-spectacular would show a docstring as every serializer's description.)

    def to_internal_value(self, data):
        if isinstance(data, dict):
            known = set(self.fields) | FORM_CONTROL_FIELDS
            unknown = sorted(set(data) - known)
            if unknown:
                raise serializers.ValidationError({name: ["Unknown field."] for name in unknown}, code="unknown_field")
        return super().to_internal_value(data)


class StrictModelSerializer(StrictFieldsMixin, serializers.ModelSerializer):
    pass


class StrictSerializer(StrictFieldsMixin, serializers.Serializer):
    pass
