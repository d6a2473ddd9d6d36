"""A one-file Django project for django_site.tac; yours has its settings and urls modules."""

import django
from django.conf import settings
from django.http import JsonResponse
from django.urls import path


def hello(request):
    return JsonResponse({"path": request.path, "path_info": request.path_info,
                         "script_name": request.META["SCRIPT_NAME"]})


urlpatterns = [path("hello/", hello)]

settings.configure(ALLOWED_HOSTS=["127.0.0.1", "localhost"], ROOT_URLCONF=__name__, SECRET_KEY="an example only")
django.setup()
