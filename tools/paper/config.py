"""Paths, protocol and configuration labels shared by the modules. ROOT, RESULTS, DOC and SPEED are read at call
time as `config.NAME`: `tables --results/--doc/--speed-file` (and the tests) point the tool elsewhere by rebinding
them here."""
import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RESULTS = os.path.join(ROOT, "results", "mtd")
DOC = os.path.join(ROOT, "docs", "results.md")
SPEED = os.path.join(ROOT, "results", "mtd-speed.json")

# The protocol shared by every run (docs/results.md): the paper's MTD recipe at a width that trains in well
# under an hour on 2 CPU cores.
PROTOCOL = {"epochs": 60, "hidden": 128, "batch_size": 16, "lr": 2e-4, "weight_decay": 1e-5}

# (table, label) of the Table 3 configurations: the keys of results and claims.
VALIDFLOW = ("table3", "ValidFlow n = 3")
CSFLOW4 = ("table3", "CS-Flow, 4 blocks (official default)")
CSFLOW6 = ("table3", "CS-Flow, 6 blocks (paper's Table 5)")

# Longer training: the official CS-Flow code trains 240 epochs (4 meta-epochs of 60), the paper's MTD protocol 60.
# Each such run continues its 60-epoch run of seed 0 (no learning-rate schedule, the Adam state is in the
# checkpoint and each epoch's shuffle depends only on seed and epoch, so this equals a 240-epoch run) and is scored
# after every 60 epochs.
LONGER_EPOCHS = 240
STAGE_EPOCHS = 60
CSFLOW4_LONGER = ("longer", "CS-Flow, 4 blocks, 240 epochs (the official schedule)")
VALIDFLOW_LONGER = ("longer", "ValidFlow n = 3, 240 epochs")
CSFLOW6_LONGER = ("longer", "CS-Flow, 6 blocks, 240 epochs")
