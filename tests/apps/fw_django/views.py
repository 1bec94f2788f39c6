from __future__ import annotations

from django.contrib.auth.models import User
from django.http import HttpRequest, JsonResponse


def users(request: HttpRequest) -> JsonResponse:
    """Reads the ORM: raises SynchronousOnlyOperation when an event loop is visible in the thread."""
    return JsonResponse({"users": list(User.objects.order_by("username").values_list("username", flat=True))})
