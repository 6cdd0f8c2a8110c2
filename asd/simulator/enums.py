"""Small-int enums shared by the simulator kernels (numba compares plain ints, not Enum objects)."""

# Event kinds of the discrete-event simulation (des_nb.py): one handler per kind.
ARRIVAL = 0  # a request enters the system and joins its start tier's queue
ITERATION_END = 1  # one continuous-batching iteration of a replica finishes

# Arrival processes (des.arrival_times).
POISSON = 0
GAMMA = 1  # bursty: gamma inter-arrival gaps with a given coefficient of variation
TRACE = 2  # the trace's recorded offsets

ARRIVAL_PROCESSES = {"poisson": POISSON, "gamma": GAMMA, "trace": TRACE}

# Columns of the iteration coefficients (L, 4), in ms (COMMON.md §4 iteration_coefficients).
C_FIXED, C_PREFILL_TOKEN, C_DECODE_SEQ, C_KV_TOKEN = range(4)
