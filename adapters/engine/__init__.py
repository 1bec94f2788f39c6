"""The inline WSGI engine (``--threads 1``): HTTP/1.x on a selectors loop with no asyncio, its connections, TLS,
responses and upload threads.

May import: the engine-neutral modules of clusterrun.adapters (limits, admission, proxy, headers, methods,
deadline, wsgi_app, wsgi_input) and clusterrun's leaves. Never uvicorn, nor stack/.
"""
