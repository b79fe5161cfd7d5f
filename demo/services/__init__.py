"""The sample services. Each module's ``build(service)`` adds its routes to a ``demo.web.Service``."""
