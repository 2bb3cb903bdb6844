from django.contrib.auth.models import AbstractUser


class User(AbstractUser):
    """A person using Weft: a builder, or an operator when ``is_staff``.

    A project-owned user model from the start, so that quotas and preferences can be added
    to it later without a swap.
    """

    class Meta:
        db_table = "users"
