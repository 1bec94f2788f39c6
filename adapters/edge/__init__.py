"""What both engines put at the edge, between the network and the app: the PROXY protocol header read before a
connection's first request (proxy_protocol) and the files served before the app (static, for --static).

May import: the engine-neutral modules of clusterrun.adapters and clusterrun's leaves. Never engine/ nor stack/:
both engines import this package.
"""
