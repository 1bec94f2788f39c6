"""The configuration: every option defined once as data (options), where values come from besides the command
line (sources), and the build of one frozen Config from them all (build).

May import: clusterrun's leaves (errors, identity, logs, accesslog, _version) and host/, wire/.
"""
