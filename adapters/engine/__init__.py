"""The inline WSGI engine (``--threads 1``): HTTP/1.x on a selectors loop with no asyncio, its connections, TLS,
responses and upload threads. The server (``WSGIEngine``) takes one ``EngineSettings`` (settings) and hands
itself to its connections as the ``Engine`` protocol declared beside them (connection): connection, tls and upload
never import the server. A connection that begins as HTTP/2 (ALPN h2, the h2c preface, Upgrade: h2c) goes to what
``EngineSettings.http2`` builds (adapters.entry: adapters.stack.inline_h2, its own asyncio thread).

May import: the engine-neutral modules of clusterrun.adapters (limits, admission, proxy, headers, methods,
deadline, wsgi_app, wsgi_input) and clusterrun's leaves. Never uvicorn, nor asyncio, nor stack/.
"""
