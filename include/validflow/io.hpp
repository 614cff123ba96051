#pragma once
// Files: PyTorch state dicts, validflow's verified container, atomic writes.
#include <validflow/io/crc32.hpp>
#include <validflow/io/errors.hpp>
#include <validflow/io/files.hpp>
#include <validflow/io/state_dict.hpp>
#include <validflow/io/tensor_archive.hpp>
