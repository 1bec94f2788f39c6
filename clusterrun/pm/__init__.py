"""The process manager (PM2's role): ``clusterrun start|restart|delete|describe|save|resurrect``.

Apps start in the background, detached from the terminal, each a named cluster with its control socket; what
``start`` used for each app, their pid files, logs and the dump live under ``$CLUSTERRUN_HOME`` (default
~/.clusterrun). Inside, one way down: commands -> launch -> home.

May import: ctl/ (the control socket's client: an app is steered and watched through it), config/, host/,
wire/ and the leaves. Nothing of primary/, worker/ or ops/: a managed app is a separate process.
"""
