from django.apps import AppConfig


class LiveConfig(AppConfig):
    name = "dashboard.live"
    label = "live"

    def ready(self) -> None:
        from dashboard.live.broadcast import mark_changed
        from topology.changes import views_changed

        views_changed.connect(mark_changed, dispatch_uid="meshscope-live-mark-changed")
