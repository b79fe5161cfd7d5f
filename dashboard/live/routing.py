from django.urls import re_path

from dashboard.live.consumers import LiveConsumer

websocket_urlpatterns = [
    re_path(r"^ws/live/(?P<view>[a-z]+)/$", LiveConsumer.as_asgi()),
]
