#include "datasets.hpp"

#include <validflow/io/files.hpp>
#include <validflow/util/text.hpp>

namespace validflow {
namespace app {
bool has_masks(const std::vector<Sample>& samples) {
  const bool any_defective = std::any_of(samples.begin(), samples.end(), [](const Sample& s) { return s.label == 1; });
  return any_defective && std::all_of(samples.begin(), samples.end(),
                                      [](const Sample& s) { return s.label == 0 || !s.mask_path.empty(); });
}

namespace detail {
namespace fs = std::filesystem;

bool is_image_file(const fs::path& p) {
  static const std::set<std::string> ext{".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"};
  return ext.count(to_lower(p.extension().string())) > 0;
}

void require_dir(const fs::path& p, const std::string& what) {
  std::error_code ec;
  if (!fs::is_directory(p, ec)) throw DatasetError(what + ": folder not found: " + p.string());
}

std::vector<fs::path> list_images(const fs::path& dir, const std::string& ext_filter = "") {
  std::vector<fs::path> out;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    std::error_code type_ec;
    // Everything with an image name is listed, files or not (a dangling link, a FIFO, a link to a device, a folder
    // named x.png): reading it then names it (an error, or a skipped image with --skip-bad-images) instead of the
    // image silently missing from the dataset.
    const fs::path& p = it->path();
    if (p.filename().string().find(io::kTempMarker) != std::string::npos) continue;  // a writer's temporary file
    if (ext_filter.empty() ? is_image_file(p) : to_lower(p.extension().string()) == ext_filter) out.push_back(p);
  }
  if (ec) throw DatasetError("cannot list folder " + dir.string() + ": " + ec.message());
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<fs::path> list_subdirs(const fs::path& dir) {
  std::vector<fs::path> out;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
    if (it->is_directory(ec)) out.push_back(it->path());
  if (ec) throw DatasetError("cannot list folder " + dir.string() + ": " + ec.message());
  std::sort(out.begin(), out.end());
  return out;
}

bool file_exists(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec);
}

std::uint64_t uniform_below(std::mt19937_64& rng, std::uint64_t n) {
  const std::uint64_t limit = std::numeric_limits<std::uint64_t>::max() - std::numeric_limits<std::uint64_t>::max() % n;
  std::uint64_t x;
  do x = rng();
  while (x >= limit);
  return x % n;
}

template <class T>
void shuffle(std::vector<T>& v, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  for (std::size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[uniform_below(rng, i)]);
}

void require_train(const Dataset& d, const fs::path& where) {
  if (d.train.empty())
    throw DatasetError(d.kind + " dataset: empty training set (no good images) in " + where.string());
}

void require_test(const Dataset& d, const fs::path& where) {
  if (d.test.empty()) throw DatasetError(d.kind + " dataset: empty test set in " + where.string());
}

void read_test_folders(Dataset& d, const fs::path& root, bool masks_required) {
  const fs::path test = root / "test";
  require_dir(test, d.kind + " dataset");
  const fs::path gt = root / "ground_truth";
  if (masks_required) require_dir(gt, d.kind + " dataset");
  for (const auto& sub : list_subdirs(test)) {
    const std::string type = sub.filename().string();
    const int label = type == "good" ? 0 : 1;
    const fs::path gt_dir = gt / type;
    const bool type_has_masks = label == 1 && fs::is_directory(gt_dir);
    if (label == 1 && masks_required && !type_has_masks)
      throw DatasetError(d.kind + " dataset: mask folder not found: " + gt_dir.string());
    for (const auto& img : list_images(sub)) {
      Sample s;
      s.path = img.string();
      s.label = label;
      s.type = type;
      if (type_has_masks) {
        const std::string stem = img.stem().string();
        const fs::path a = gt_dir / (stem + "_mask.png"), b = gt_dir / (stem + ".png");
        if (file_exists(a))
          s.mask_path = a.string();
        else if (file_exists(b))
          s.mask_path = b.string();
        else
          throw DatasetError(d.kind + " dataset: mask not found for " + img.string() + " (expected " + a.string() +
                             ")");
      }
      d.test.push_back(std::move(s));
    }
  }
}

std::vector<std::string> split_ws(const std::string& line) {
  std::istringstream is(line);
  std::vector<std::string> t;
  std::string w;
  while (is >> w) t.push_back(w);
  return t;
}

bool all_digits(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c) != 0; });
}

/// A file name from a labels file: relative, and no `..` component, so it stays inside the dataset folder.
bool stays_inside(const std::string& name) {
  const fs::path p(name);
  if (p.is_absolute() || p.has_root_name() || p.has_root_directory()) return false;
  for (const auto& part : p)
    if (part == "..") return false;
  return true;
}

std::vector<DagmLabel> read_dagm_labels(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw DatasetError("dagm dataset: cannot open labels file " + file.string());
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return parse_dagm_labels(text, file.string());
}

}  // namespace detail

std::vector<DagmLabel> parse_dagm_labels(const std::string& text, const std::string& file) {
  std::vector<DagmLabel> rows;
  std::istringstream in(text);
  std::string line;
  std::size_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    const auto t = detail::split_ws(line);
    if (t.empty()) continue;
    if (line_no == 1) continue;  // header line (the DAGM files hold a single number there)
    auto bad = [&](const std::string& why) {
      return DatasetError("dagm dataset: " + file + " line " + std::to_string(line_no) + ": " + why +
                          " (expected `id label image 0 mask-file`): \"" + line + "\"");
    };
    if (t.size() != 5) throw bad(std::to_string(t.size()) + " column" + (t.size() == 1 ? "" : "s") + " instead of 5");
    if (!detail::all_digits(t[0])) throw bad("id is not a number");
    if (t[1] != "0" && t[1] != "1") throw bad("label is not 0 or 1");
    if (!detail::all_digits(t[3])) throw bad("the fourth column is not a number");
    DagmLabel r;
    r.label = t[1] == "1" ? 1 : 0;
    r.image = t[2];
    if (t[4] != "0") r.mask = t[4];
    if (r.label == 0 && !r.mask.empty()) throw bad("a good image (label 0) names a mask file");
    if (!detail::stays_inside(r.image) || (!r.mask.empty() && !detail::stays_inside(r.mask)))
      throw bad("a file name leaves the dataset folder (absolute, or with a `..` component)");
    rows.push_back(std::move(r));
  }
  if (rows.empty()) throw DatasetError("dagm dataset: no rows in labels file " + file);
  return rows;
}

namespace detail {

/// Fields of one line split at `sep` (' ': runs of spaces and tabs), with RFC 4180 quotes ("a,b", "say ""hi""").
/// Returns false for an unterminated quote.
bool split_fields(const std::string& line, char sep, std::vector<std::string>& fields) {
  fields.clear();
  std::string field;
  bool quoted = false, was_quoted = false;
  for (size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (quoted) {
      if (c == '"' && i + 1 < line.size() && line[i + 1] == '"') {
        field += '"';
        ++i;
      } else if (c == '"') {
        quoted = false;
      } else {
        field += c;
      }
    } else if (c == '"' && field.empty()) {
      quoted = was_quoted = true;
    } else if (sep == ' ' ? (c == ' ' || c == '\t') : c == sep) {
      if (sep == ' ' && field.empty() && !was_quoted) continue;  // a run of spaces is one separator
      fields.push_back(field);
      field.clear();
      was_quoted = false;
    } else {
      field += c;
    }
  }
  if (quoted) return false;
  if (sep != ' ' || !field.empty() || was_quoted) fields.push_back(field);
  return true;
}

std::string trim(const std::string& s) {
  const auto a = s.find_first_not_of(" \t");
  if (a == std::string::npos) return "";
  return s.substr(a, s.find_last_not_of(" \t") - a + 1);
}

}  // namespace detail

std::vector<LabelRow> parse_label_csv(const std::string& text, const std::string& file, double cutoff) {
  if (!(cutoff > 0 && cutoff <= 1)) throw DatasetError("csv dataset: the label cut-off must be in (0, 1]");
  std::vector<std::string> lines;
  {
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      lines.push_back(line);
    }
  }
  if (!lines.empty() && lines[0].rfind("\xEF\xBB\xBF", 0) == 0) lines[0] = lines[0].substr(3);  // a UTF-8 BOM
  size_t first = 0;
  while (first < lines.size() && detail::trim(lines[first]).empty()) ++first;
  if (first == lines.size()) throw DatasetError("csv dataset: no rows in labels file " + file);
  char sep = ' ';
  for (char c : {',', ';', '\t'})
    if (lines[first].find(c) != std::string::npos) {
      sep = c;
      break;
    }
  auto bad = [&](size_t line_no, const std::string& why) {
    return DatasetError("csv dataset: " + file + " line " + std::to_string(line_no) + ": " + why);
  };
  std::vector<std::string> fields;
  if (!detail::split_fields(lines[first], sep, fields)) throw bad(first + 1, "unterminated quote");
  // Column positions: path, label, type, mask, split (-1: absent).
  int col_path = 0, col_label = 1, col_type = -1, col_mask = -1, col_split = -1;
  size_t columns = 0;
  bool header = false;
  for (const auto& f : fields) header = header || to_lower(detail::trim(f)) == "path";
  if (header) {
    col_path = col_label = -1;
    for (size_t i = 0; i < fields.size(); ++i) {
      const auto name = to_lower(detail::trim(fields[i]));
      int* slot = name == "path"    ? &col_path
                  : name == "label" ? &col_label
                  : name == "type"  ? &col_type
                  : name == "mask"  ? &col_mask
                  : name == "split" ? &col_split
                                    : nullptr;
      if (!slot) throw bad(first + 1, "unknown column '" + fields[i] + "' (known: path, label, mask, type, split)");
      if (*slot >= 0) throw bad(first + 1, "column '" + name + "' appears twice");
      *slot = static_cast<int>(i);
    }
    if (col_label < 0) throw bad(first + 1, "the header has no 'label' column");
    columns = fields.size();
  } else {
    if (fields.size() < 2 || fields.size() > 3)
      throw bad(first + 1, std::to_string(fields.size()) +
                               " columns; without a header a row is: path, label[, type] (or give a header naming "
                               "path, label, mask, type, split)");
    if (fields.size() == 3) col_type = 2;
    columns = fields.size();
  }
  std::vector<LabelRow> rows;
  std::set<std::string> seen;
  for (size_t i = header ? first + 1 : first; i < lines.size(); ++i) {
    const size_t line_no = i + 1;
    if (detail::trim(lines[i]).empty()) continue;
    if (!detail::split_fields(lines[i], sep, fields)) throw bad(line_no, "unterminated quote");
    if (fields.size() != columns)
      throw bad(line_no, std::to_string(fields.size()) + " columns, expected " + std::to_string(columns));
    const auto at = [&](int col) { return col < 0 ? std::string() : detail::trim(fields[static_cast<size_t>(col)]); };
    LabelRow r;
    r.line = line_no;
    r.image = at(col_path);
    if (r.image.empty()) throw bad(line_no, "empty path");
    const auto label = to_lower(at(col_label));
    if (label == "good" || label == "ok" || label == "normal") {
      r.label = 0;
    } else if (label == "defective" || label == "defect" || label == "bad" || label == "anomalous") {
      r.label = 1;
    } else {
      double p = std::nan("");
      try {
        size_t used = 0;
        p = std::stod(label, &used);
        if (used != label.size()) p = std::nan("");
      } catch (const std::exception&) {
      }
      if (!(p >= 0 && p <= 1))
        throw bad(line_no, "label '" + at(col_label) + "' is not good/defective, 0/1 or a probability in [0, 1]");
      r.label = p >= cutoff ? 1 : 0;
    }
    r.type = at(col_type);
    if (r.label == 0)
      r.type = "good";
    else if (r.type.empty())
      r.type = "defect";
    else if (to_lower(r.type) == "good")
      throw bad(line_no, "a defective image has type 'good'");
    r.mask = at(col_mask);
    if (r.label == 0 && !r.mask.empty()) throw bad(line_no, "a good image names a mask file");
    r.split = to_lower(at(col_split));
    if (!r.split.empty() && r.split != "train" && r.split != "test")
      throw bad(line_no, "split '" + at(col_split) + "' is not train or test");
    if (r.split == "train" && r.label == 1) throw bad(line_no, "a defective image cannot train (split train)");
    if (!seen.insert(r.image).second) throw bad(line_no, "the image " + r.image + " is listed twice");
    rows.push_back(std::move(r));
  }
  if (rows.empty()) throw DatasetError("csv dataset: no rows in labels file " + file);
  return rows;
}

Dataset load_label_csv(const std::string& csv_path, std::uint64_t seed, double test_fraction, double cutoff) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_regular_file(csv_path, ec)) throw DatasetError("csv dataset: labels file not found: " + csv_path);
  if (fs::file_size(csv_path, ec) > (std::uintmax_t{64} << 20))
    throw DatasetError("csv dataset: labels file larger than 64 MiB: " + csv_path);
  if (!(test_fraction > 0.0 && test_fraction < 1.0))
    throw DatasetError("csv dataset: test fraction must be in (0, 1), got " + std::to_string(test_fraction));
  std::ifstream in(csv_path, std::ios::binary);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (!in.good() && !in.eof()) throw DatasetError("csv dataset: cannot read labels file " + csv_path);
  const auto rows = parse_label_csv(text, csv_path, cutoff);
  const fs::path base = fs::path(csv_path).parent_path();
  Dataset d;
  d.kind = "csv";
  d.root = csv_path;
  std::vector<Sample> unsplit_good;
  for (const auto& r : rows) {
    const auto resolve = [&](const std::string& name) {
      const fs::path p(name);
      return (p.is_absolute() ? p : base / p).lexically_normal().string();
    };
    Sample s{resolve(r.image), r.label, r.type, r.mask.empty() ? "" : resolve(r.mask)};
    const auto where = csv_path + " line " + std::to_string(r.line);
    if (!detail::file_exists(s.path))
      throw DatasetError("csv dataset: image not found: " + s.path + " (" + where + ")");
    if (!s.mask_path.empty() && !detail::file_exists(s.mask_path))
      throw DatasetError("csv dataset: mask not found: " + s.mask_path + " (" + where + ")");
    if (r.split == "train")
      d.train.push_back(std::move(s));
    else if (r.split == "test" || r.label == 1)
      d.test.push_back(std::move(s));
    else
      unsplit_good.push_back(std::move(s));
  }
  // The seeded split of the good images without a split (as MTD's): a test_fraction share is tested.
  detail::shuffle(unsplit_good, seed);
  const auto n_test = static_cast<std::size_t>(std::llround(static_cast<double>(unsplit_good.size()) * test_fraction));
  auto by_path = [](const Sample& a, const Sample& b) { return a.path < b.path; };
  d.test.insert(d.test.end(), unsplit_good.begin(), unsplit_good.begin() + static_cast<std::ptrdiff_t>(n_test));
  d.train.insert(d.train.end(), unsplit_good.begin() + static_cast<std::ptrdiff_t>(n_test), unsplit_good.end());
  std::sort(d.train.begin(), d.train.end(), by_path);
  std::stable_sort(d.test.begin(), d.test.end(), [](const Sample& a, const Sample& b) {
    return a.label != b.label ? a.label < b.label : a.path < b.path;
  });
  detail::require_train(d, csv_path);
  detail::require_test(d, csv_path);
  return d;
}

namespace detail {

Dataset load_good_and_test_folders(const std::string& root_path, const std::string& kind, bool masks_required) {
  namespace fs = std::filesystem;
  const fs::path root(root_path);
  require_dir(root, kind + " dataset");
  Dataset d;
  d.kind = kind;
  d.root = root.string();
  const fs::path train = root / "train" / "good";
  require_dir(train, kind + " dataset");
  for (const auto& p : list_images(train)) d.train.push_back({p.string(), 0, "good", ""});
  require_train(d, train);
  read_test_folders(d, root, masks_required);
  require_test(d, root / "test");
  return d;
}

}  // namespace detail
Dataset load_mvtec(const std::string& root_path) {
  return detail::load_good_and_test_folders(root_path, "mvtec", /*masks_required=*/true);
}

Dataset load_folder(const std::string& root_path) {
  return detail::load_good_and_test_folders(root_path, "folder", /*masks_required=*/false);
}

Dataset load_mtd(const std::string& root_path, std::uint64_t seed, double test_fraction) {
  namespace fs = std::filesystem;
  const fs::path root(root_path);
  detail::require_dir(root, "mtd dataset");
  if (!(test_fraction > 0.0 && test_fraction < 1.0))
    throw DatasetError("mtd dataset: test fraction must be in (0, 1), got " + std::to_string(test_fraction));
  Dataset d;
  d.kind = "mtd";
  d.root = root.string();
  const fs::path free_dir = root / "MT_Free" / "Imgs";
  detail::require_dir(free_dir, "mtd dataset");

  auto read_class = [&](const fs::path& imgs, int label, const std::string& type) {
    std::vector<Sample> out;
    for (const auto& p : detail::list_images(imgs, ".jpg")) {
      Sample s{p.string(), label, type, ""};
      fs::path mask = p;
      mask.replace_extension(".png");
      if (detail::file_exists(mask))
        s.mask_path = mask.string();
      else if (label == 1)
        throw DatasetError("mtd dataset: mask not found for " + p.string() + " (expected " + mask.string() + ")");
      out.push_back(std::move(s));
    }
    return out;
  };

  std::vector<Sample> good = read_class(free_dir, 0, "good");
  if (good.empty()) throw DatasetError("mtd dataset: empty training set (no .jpg images) in " + free_dir.string());
  detail::shuffle(good, seed);
  const auto n_test = static_cast<std::size_t>(std::llround(static_cast<double>(good.size()) * test_fraction));
  const std::size_t n_train = good.size() - n_test;
  d.train.assign(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(n_train));
  std::vector<Sample> test_good(good.begin() + static_cast<std::ptrdiff_t>(n_train), good.end());
  auto by_path = [](const Sample& a, const Sample& b) { return a.path < b.path; };
  std::sort(d.train.begin(), d.train.end(), by_path);
  std::sort(test_good.begin(), test_good.end(), by_path);
  detail::require_train(d, free_dir);
  d.test = std::move(test_good);

  std::size_t n_defect_dirs = 0;
  for (const auto& sub : detail::list_subdirs(root)) {
    const std::string name = sub.filename().string();
    if (name.rfind("MT_", 0) != 0 || name == "MT_Free") continue;
    const fs::path imgs = sub / "Imgs";
    detail::require_dir(imgs, "mtd dataset");
    auto s = read_class(imgs, 1, to_lower(name.substr(3)));
    d.test.insert(d.test.end(), s.begin(), s.end());
    ++n_defect_dirs;
  }
  if (n_defect_dirs == 0)
    throw DatasetError("mtd dataset: no defect folders (MT_Blowhole, MT_Crack, ...) in " + root.string());
  return d;
}

Dataset load_dagm(const std::string& root_path) {
  namespace fs = std::filesystem;
  const fs::path root(root_path);
  detail::require_dir(root, "dagm dataset");
  Dataset d;
  d.kind = "dagm";
  d.root = root.string();
  for (const char* split : {"Train", "Test"}) {
    const fs::path dir = root / split;
    detail::require_dir(dir, "dagm dataset");
    const fs::path labels = dir / "Label" / "Labels.txt";
    if (!detail::file_exists(labels)) throw DatasetError("dagm dataset: labels file not found: " + labels.string());
    for (const auto& r : detail::read_dagm_labels(labels)) {
      const fs::path img = dir / r.image;
      if (!detail::file_exists(img))
        throw DatasetError("dagm dataset: image listed in " + labels.string() + " not found: " + img.string());
      Sample s{img.string(), r.label, r.label ? "defect" : "good", ""};
      if (!r.mask.empty()) {
        const fs::path m = dir / "Label" / r.mask;
        if (!detail::file_exists(m))
          throw DatasetError("dagm dataset: mask listed in " + labels.string() + " not found: " + m.string());
        s.mask_path = m.string();
      }
      if (std::string(split) == "Train") {
        if (s.label == 0) d.train.push_back(std::move(s));
      } else {
        d.test.push_back(std::move(s));
      }
    }
    if (std::string(split) == "Train") detail::require_train(d, labels);
  }
  detail::require_test(d, root / "Test");
  return d;
}

namespace detail {
/// The bytes of an image or mask file. Throws DatasetError naming the path: not found, a dangling symbolic
/// link, not a regular file, unreadable.
std::string read_image_bytes(const std::string& path, const std::string& what) {
  std::error_code ec;
  const auto link = fs::symlink_status(path, ec);
  if (fs::is_symlink(link) && !fs::exists(fs::status(path, ec)))
    throw DatasetError(what + " is a dangling symbolic link: " + path);
  if (!fs::exists(link)) throw DatasetError(what + " not found: " + path);
  if (!fs::is_regular_file(fs::status(path, ec))) throw DatasetError(what + " is not a regular file: " + path);
  std::ifstream in(path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (!in.good() && !in.eof()) throw DatasetError("cannot read " + what + ": " + path);
  return bytes;
}

}  // namespace detail

cv::Mat decode_image_bytes(const std::string& bytes, const std::string& name) {
  try {
    return io::decode_image_bytes(bytes, name);
  } catch (const io::ImageDecodeError& e) {
    throw DatasetError(e.what());
  }
}

cv::Mat decode_image(const std::string& path) {
  return decode_image_bytes(detail::read_image_bytes(path, "image"), path);
}

cv::Mat load_image(const std::string& path, int size) {
  const cv::Mat decoded = decode_image(path);
  cv::Mat f;
  decoded.convertTo(f, CV_32FC3, decoded.depth() == CV_8U ? 1.0 / 255.0 : 1.0);
  if (size > 0 && (f.rows != size || f.cols != size)) cv::resize(f, f, cv::Size(size, size), 0, 0, cv::INTER_LINEAR);
  return f;
}

cv::Mat decode_mask_bytes(const std::string& bytes, const std::string& name, int threshold) {
  try {
    return io::decode_mask_bytes(bytes, name, threshold);
  } catch (const io::ImageDecodeError& e) {
    throw DatasetError(e.what());
  }
}

cv::Mat load_mask(const std::string& path, int size, int threshold) {
  if (path.empty()) {
    if (size <= 0) throw std::invalid_argument("load_mask: an empty mask path needs a size > 0");
    return cv::Mat::zeros(size, size, CV_8UC1);
  }
  cv::Mat m = decode_mask_bytes(detail::read_image_bytes(path, "mask"), path, threshold);
  if (size > 0 && (m.rows != size || m.cols != size)) cv::resize(m, m, cv::Size(size, size), 0, 0, cv::INTER_NEAREST);
  return m;
}

void check_dataset_images(Dataset& d, bool skip_bad_images,
                          const std::function<void(std::size_t, std::size_t)>& on_progress) {
  const std::size_t total = d.train.size() + d.test.size();
  std::size_t done = 0;
  auto filter = [&](std::vector<Sample>& v) {
    std::vector<Sample> kept;
    kept.reserve(v.size());
    for (auto& s : v) {
      try {
        // The feature cache and the reports keep paths as JSON text (UTF-8): a name that is not would fail when the
        // cache is written, after all the work. Said before any work instead (predict escapes such names).
        for (const auto* path : {&s.path, &s.mask_path})
          if (!is_valid_utf8(*path))
            throw DatasetError("file name is not valid UTF-8 (rename it, e.g. with convmv): " + escape_non_utf8(*path));
        const cv::Mat image = decode_image(s.path);
        if (!s.mask_path.empty()) {
          // A mask of another size than its image does not describe its pixels: an error, never resized.
          const cv::Mat mask = load_mask(s.mask_path, 0);
          if (mask.size() != image.size())
            throw DatasetError("mask " + s.mask_path + " is " + std::to_string(mask.cols) + " x " +
                               std::to_string(mask.rows) + " pixels, its image " + s.path + " is " +
                               std::to_string(image.cols) + " x " + std::to_string(image.rows));
        }
        kept.push_back(std::move(s));
      } catch (const DatasetError& e) {
        if (!skip_bad_images) throw;
        d.skipped.push_back({s.path, e.what()});
      }
      if (on_progress) on_progress(++done, total);
    }
    v = std::move(kept);
  };
  filter(d.train);
  filter(d.test);
  if (d.train.empty())
    throw DatasetError(d.kind + " dataset: empty training set after skipping bad images in " + d.root);
  if (d.test.empty()) throw DatasetError(d.kind + " dataset: empty test set after skipping bad images in " + d.root);
}

void hold_out(Dataset& d, double fraction, std::uint64_t seed) {
  if (!(fraction >= 0.0 && fraction <= 0.5))
    throw DatasetError("the held-out fraction must be in 0..0.5, got " + std::to_string(fraction));
  if (fraction == 0.0 || d.train.empty()) return;
  if (d.train.size() < 2)
    throw DatasetError(d.kind + " dataset: one training image cannot be split for a hold-out set");
  auto count = static_cast<std::size_t>(std::llround(fraction * static_cast<double>(d.train.size())));
  count = std::clamp<std::size_t>(count, 1, d.train.size() - 1);
  std::vector<std::size_t> order(d.train.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  detail::shuffle(order, seed ^ 0x9E3779B97F4A7C15ull);  // independent of the MTD split's stream
  std::vector<bool> held(d.train.size(), false);
  for (std::size_t i = 0; i < count; ++i) held[order[i]] = true;
  std::vector<Sample> train;
  for (std::size_t i = 0; i < d.train.size(); ++i) (held[i] ? d.holdout : train).push_back(d.train[i]);
  d.train = std::move(train);
}

std::vector<std::string> collect_image_files(const std::vector<std::string>& paths, std::vector<BadImage>& problems,
                                             const std::string& exclude) {
  namespace fs = std::filesystem;
  std::vector<std::string> files;
  for (const auto& path : paths) {
    std::error_code ec;
    const auto status = fs::status(path, ec);
    if (fs::is_symlink(fs::symlink_status(path, ec)) && !fs::exists(status)) {
      problems.push_back({path, "dangling symbolic link"});
      continue;
    }
    if (!fs::exists(status)) {
      problems.push_back({path, "no such file or folder"});
      continue;
    }
    if (!fs::is_directory(status)) {
      files.push_back(path);
      continue;
    }
    std::vector<std::string> found;
    fs::recursive_directory_iterator it(path, fs::directory_options::skip_permission_denied, ec), end;
    if (ec) problems.push_back({path, "cannot list folder: " + ec.message()});
    for (; !ec && it != end; it.increment(ec)) {
      std::error_code entry_ec;
      const auto name = it->path().filename().string();
      if (it->is_directory(entry_ec) && ((!exclude.empty() && io::same_file(it->path().string(), exclude)) ||
                                         name.find(io::kTempMarker) != std::string::npos)) {
        it.disable_recursion_pending();  // predict's own output (--out) and staging folders are never inputs
        continue;
      }
      const bool image_name = detail::is_image_file(it->path());
      if (it->is_symlink(entry_ec) && !fs::exists(it->path(), entry_ec)) {
        problems.push_back({it->path().string(), "dangling symbolic link"});
      } else if (it->is_regular_file(entry_ec)) {
        if (image_name) found.push_back(it->path().string());
      } else if (image_name) {  // named like an image, but not a file one could decode: said, never dropped
        problems.push_back({it->path().string(), it->is_directory(entry_ec)
                                                     ? "a folder named like an image (its files are searched)"
                                                     : "not a regular file (a FIFO, device or socket)"});
      }
    }
    if (ec) problems.push_back({path, "cannot list folder: " + ec.message()});
    std::sort(found.begin(), found.end());
    files.insert(files.end(), found.begin(), found.end());
  }
  return files;
}

Dataset load_dataset(const std::string& spec, const DatasetOptions& opt) {
  const auto colon = spec.find(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == spec.size())
    throw DatasetError("dataset spec \"" + spec + "\" is not KIND:PATH (KIND: mvtec, mtd, dagm, folder, csv)");
  const std::string kind = spec.substr(0, colon), path = spec.substr(colon + 1);
  Dataset d;
  if (kind == "mvtec")
    d = load_mvtec(path);
  else if (kind == "mtd")
    d = load_mtd(path, opt.seed, opt.mtd_test_fraction);
  else if (kind == "dagm")
    d = load_dagm(path);
  else if (kind == "folder")
    d = load_folder(path);
  else if (kind == "csv")
    d = load_label_csv(path, opt.seed, opt.mtd_test_fraction, opt.label_cutoff);
  else
    throw DatasetError("unknown dataset kind \"" + kind + "\" in \"" + spec +
                       "\" (known: mvtec, mtd, dagm, folder, csv)");
  if (opt.check_images) check_dataset_images(d, opt.skip_bad_images);
  hold_out(d, opt.holdout_fraction, opt.holdout_seed);
  return d;
}

}  // namespace app
}  // namespace validflow
