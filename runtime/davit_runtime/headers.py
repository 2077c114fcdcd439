"""HTTP headers the runtime and the router agree on (the router imports this module alone of
the runtime's, so it must import nothing heavy)."""

# On every inference answer: requests waiting in the model's batch queue as it is sent. The
# router adds it to its own count of requests in flight to pick the less loaded endpoint.
QUEUE_DEPTH = "x-davit-queue-depth"
