"""What the operating system gives: listeners, the TLS context, privileges, CPUs, the memory limit, signals, the
pid file, sd_notify, timers, the kernel's figures of a process, and the state folder ($CLUSTERRUN_HOME).

May import: clusterrun's leaves only (errors, identity, _version). Nothing here knows of workers or the primary.
"""
