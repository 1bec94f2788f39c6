"""The supervisor: the primary's one loop, the pool of workers and their slots, forking, reaping, throttled
respawns, rolling replacement, dispatch and its policies, the watchdog, events and the code reloader.

May import: config/, host/, wire/, the leaves and clusterrun.adapters.entry. Never worker/: the worker's entry
function is handed to the forker (as uvicorn hands ``target=``), and never ops/ or ctl/, which sit above it.
"""
