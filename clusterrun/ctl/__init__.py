"""The client side of the control socket: ``clusterrun ls|status|top|reload|scale|stop|restart-worker``, and
the text people read from them; beside it, commands that work on files alone: ``logs`` (logs.py: the apps' log
files under $CLUSTERRUN_HOME) and ``startup`` (startup.py: the systemd unit that resurrects them at boot).

Inside, one way down: commands -> top -> client and text. client.py is the one client of the control socket (the
tests and bench/ use it too); the rules it shares with the server are in host/controlsocket.py.

May import: config/, host/, wire/ (what a status answer's figures mean: the latency buckets' bounds) and the
leaves; it talks to a primary only through the control socket, so it imports nothing of primary/, worker/ or
ops/.
"""
