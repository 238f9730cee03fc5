"""``sigstead witness``: an independent C2SP tlog-witness that cosigns checkpoints of the logs it
is configured for, after checking each extends the last one it cosigned (c2sp.org/tlog-witness).
"""
