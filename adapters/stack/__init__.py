"""Everything that serves on asyncio: clusterrun's own HTTP/1.1 protocol for ASGI (http1), HTTP/2 on h2 (http2),
the write flow control both share (flow), the PROXY protocol's transport view (proxied), the seam (the one
module that touches uvicorn's internals, and picks the protocol: http1 or uvicorn's), the WSGI-to-ASGI bridge for
``--threads N`` and its streamed input (body), the guard that applies clusterrun's limits there, an ASGI app's
lifespan, --request-timeout's cancelling deadline, the observer that tells the access log and --metrics of each
response (observing), and ``serving``, which gathers what a worker on the stack takes
(through clusterrun.adapters.entry, only once it has chosen the stack: a WSGI worker on the inline engine loads
nothing of this package, unless it gets an HTTP/2 connection: entry then builds ``inline_h2``, the inline engine's
HTTP/2 side on an asyncio thread of its own).

May import: the engine-neutral modules of clusterrun.adapters, adapters.edge, and clusterrun's leaves. Never
engine/.
"""
