"""Pure traffic generators shared by the simulator (`sinergi simulate`), the benchmark and the tests:
`generators` (enrollments, payment notifications) and `statements` (the statement files a bank uploads).

Everything here is a function of an explicit ``random.Random`` and explicit dates/times: no I/O, no wall
clock, no global state. The same seed gives the same bodies.
"""
