"""davit-router: weighted traffic between a model's revisions, with outlier ejection, a breaker
per revision and a retry budget, in front of the runtime's pods.

Its own package beside davit_runtime, in the same image: nothing here imports torch (or the
runtime's model code), so the router starts fast and stays small. The decisions (which
revision, which endpoint, eject or not, retry or not) are pure and take the time as an
argument; the proxy around them does the I/O.
"""
