#pragma once
// FrEIA's blocks in C++ (docs/architecture.md: "FrEIA blocks"): AllInOneBlock (FrEIA's and anomalib's copy),
// GLOW and RNVP couplings, PermuteRandom, ActNorm, their subnets, and the import of a SequenceINN's weights.
#include <validflow/freia/all_in_one_block.hpp>
#include <validflow/freia/common.hpp>
#include <validflow/freia/coupling_blocks.hpp>
#include <validflow/freia/import.hpp>
#include <validflow/freia/permute_and_actnorm.hpp>
#include <validflow/freia/subnets.hpp>
