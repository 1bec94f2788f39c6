"""What the h2 library itself costs a server per request, in one process: the floor under any HTTP/2 on it.

    python bench/h2cost.py        # a few seconds; hold the bench lock, as for any measurement

A client H2Connection sends 16 GET requests at a time (as bench/h2load.py keeps 16 streams in flight); a server
H2Connection reads them in one ``receive_data``, answers each with HEADERS and 13 bytes of DATA, and the bytes
go back. Only the server side's calls are timed (process CPU time): parsing and HPACK-decoding the requests,
the stream state machine, encoding the answers. No sockets, no event loop, no app: what clusterrun's HTTP/2
protocol (adapters/stack/http2.py) cannot go below while it is built on h2. Measured with h2's header
validation as the protocol configures it (on, both ways), with the outbound one off (the headers the server
builds itself), and with both off.
"""

from __future__ import annotations

import sys
import time

import h2.config
import h2.connection
import h2.events

BATCH = 16
BATCHES = 2000
REQUEST = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"127.0.0.1:8000"), (b":path", b"/"),
           (b"user-agent", b"clusterrun-bench-h2load")]
RESPONSE = [(b":status", b"200"), (b"content-type", b"text/plain"), (b"content-length", b"13")]


def per_request_us(inbound: bool, outbound: bool) -> float:
    client = h2.connection.H2Connection(h2.config.H2Configuration(
        client_side=True, header_encoding=None, validate_outbound_headers=False, normalize_outbound_headers=False,
        validate_inbound_headers=False))
    server = h2.connection.H2Connection(h2.config.H2Configuration(
        client_side=False, header_encoding=None, validate_inbound_headers=inbound, normalize_inbound_headers=inbound,
        validate_outbound_headers=outbound, normalize_outbound_headers=outbound))
    client.initiate_connection()
    server.initiate_connection()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())
    server.data_to_send()
    spent = 0.0
    for _ in range(BATCHES):
        for _ in range(BATCH):
            client.send_headers(client.get_next_available_stream_id(), REQUEST, end_stream=True)
        wire = client.data_to_send()
        began = time.process_time()
        for event in server.receive_data(wire):
            if isinstance(event, h2.events.RequestReceived):
                server.send_headers(event.stream_id, RESPONSE)
                server.send_data(event.stream_id, b"Hello, world!", end_stream=True)
        answers = server.data_to_send()
        spent += time.process_time() - began
        for event in client.receive_data(answers):
            if isinstance(event, h2.events.DataReceived):
                client.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        server.receive_data(client.data_to_send())  # the client's WINDOW_UPDATEs, untimed
        server.data_to_send()
    return spent / (BATCHES * BATCH) * 1e6


def main() -> int:
    for title, inbound, outbound in (("validation on both ways (as clusterrun configures h2)", True, True),
                                     ("outbound validation off", True, False), ("both off", False, False)):
        runs = sorted(per_request_us(inbound, outbound) for _ in range(3))
        print(f"h2, server side, {title}: {runs[1]:.1f} µs per request (3 runs: "
              f"{', '.join(f'{r:.1f}' for r in runs)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
