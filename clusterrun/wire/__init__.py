"""What crosses the fork: the frames the primary and a worker exchange, the channel that carries them (and passed
sockets), the pages they share (counters, the request clock), and the heartbeat's terms.

May import: clusterrun's leaves only. Both sides of the fork import this package; it imports neither side.
"""
