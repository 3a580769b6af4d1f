# Simulated nccl-tests build (lab only): the tree `make MPI=1` leaves, packed by llmrack/lab/sim.py as the
# archive the nccl_tuning role installs from the mirror.
install -D -m 0755 "$PAYLOAD/build/all_reduce_perf" "$OUT/build/all_reduce_perf"
