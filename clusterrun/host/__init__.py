"""What the operating system gives: listeners, the TLS context, privileges, CPUs, the memory limit, signals, the
pid file, sd_notify, timers, and the kernel's figures of a process.

May import: clusterrun's leaves only (errors, identity, _version). Nothing here knows of workers or the primary.
"""
