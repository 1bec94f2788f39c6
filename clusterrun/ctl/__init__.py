"""The client side of the control socket: ``clusterrun ls|status|top|reload|scale|stop|restart-worker``, and
the text people read from them.

May import: config/, host/ and the leaves; it talks to a primary only through the control socket, so it
imports nothing of primary/, worker/ or ops/.
"""
