#pragma once
// Files: PyTorch state dicts, validflow's verified container, atomic writes.
#include <validflow/io/atomic_file.hpp>
#include <validflow/io/crc32.hpp>
#include <validflow/io/errors.hpp>
#include <validflow/io/state_dict.hpp>
#include <validflow/io/tensor_archive.hpp>
