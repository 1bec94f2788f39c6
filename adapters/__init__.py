"""Loading and serving WSGI/ASGI apps, and the framework integrations.

Installed as ``clusterrun.adapters``. uvicorn, Flask and Starlette are imported
only below this package, so that the core of clusterrun stays importable
without them.
"""
