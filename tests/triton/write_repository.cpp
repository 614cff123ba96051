// write_repository MODEL_FILE REPO NAME: writes REPO/NAME/config.pbtxt and REPO/NAME/1/model.EXT with
// validflow::triton::write_model_repository, the function behind `validflow export --triton`. The Triton tests'
// fixture (make_model.sh) uses it on the file `validflow demo` exported.
#include "model_repository.hpp"

#include <iostream>

int main(int argc, char** argv) {
  if (argc != 4) {
    std::cerr << "usage: write_repository MODEL_FILE REPO NAME\n";
    return 2;
  }
  try {
    validflow::triton::RepositoryOptions options;
    options.name = argv[3];
    options.overwrite = true;
    const auto entry = validflow::triton::write_model_repository(argv[1], argv[2], options);
    std::cout << "wrote " << entry.config.string() << " and " << entry.model_file.string() << "\n";
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "write_repository: " << e.what() << "\n";
    return 1;
  }
}
