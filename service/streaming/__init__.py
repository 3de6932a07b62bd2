"""WS /v1/stream as a package: protocol (frames <-> typed commands and messages), session (one
series' state machine), registry (the bounded set of live sessions), connection (the loop
between a websocket and its session). The route in service/routes/stream.py only accepts."""
