"""Everything that runs on uvicorn's HTTP protocol stack: the seam (the one module that touches uvicorn's
internals), the WSGI-to-ASGI bridge for ``--threads N``, and the guard that applies clusterrun's limits there.

May import: the engine-neutral modules of clusterrun.adapters and clusterrun's leaves. Never engine/.
"""
