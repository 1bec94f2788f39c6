"""Operating a running cluster, from inside the primary: the control socket and the commands it answers, the
metrics endpoint, the status rows, and the small one-request servers they run on.

May import: primary/, config/, host/, wire/ and the leaves. Never worker/ or ctl/.
"""
