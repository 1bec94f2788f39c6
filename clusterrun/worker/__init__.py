"""Life after the fork: become a worker, load the app through adapters, serve it on the chosen engine, obey the
primary, drain and exit; and the worker's side of messages and hooks.

May import: config/, host/, wire/, the leaves and clusterrun.adapters.entry. Never primary/, ops/ or ctl/.
"""
