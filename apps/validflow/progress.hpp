#pragma once
// A small progress bar for the `validflow` program (std + POSIX isatty only).
//
//   ProgressBar bar(n_images, "extract", {"img"});
//   for (...) { ...; bar.tick(); }            // or bar.update(done, "loss=1.234")
//   bar.finish();
//
// On a terminal it redraws one line on stderr (at most 10 times a second):
//   extract [##########--------------]  42/100   3.1 img/s  ETA 0:19  loss=1.234
// When the stream is not a terminal (logs, CI) it prints a plain line every `line_interval_s` seconds and
// one at the end, so logs stay readable. total = 0 means unknown: no bar, no ETA.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <sstream>
#include <string>

#include <unistd.h>

namespace validflow {
namespace app {

struct ProgressOptions {
  std::string unit = "it";  // items per second are shown as "<rate> <unit>/s"
  enum class Mode { automatic, tty, lines, silent } mode = Mode::automatic;
  std::ostream* out = nullptr;   // nullptr: std::cerr
  double line_interval_s = 5.0;  // lines mode: seconds between lines
  int bar_width = 24;
};

class ProgressBar {
 public:
  using Clock = std::chrono::steady_clock;

  ProgressBar(std::size_t total, std::string label, ProgressOptions opt = {});
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;
  ~ProgressBar();

  /// Sets the number of finished items (and optionally the message shown after the rate).
  void update(std::size_t done, const std::string& message = {});
  void tick(const std::string& message = {}) { update(done_ + 1, message); }
  void set_message(const std::string& message) { message_ = message; }

  /// Final line (with a newline). Safe to call once; later updates are ignored by the caller's contract.
  void finish(const std::string& message = {});

  std::size_t done() const { return done_; }
  double elapsed_seconds() const { return std::chrono::duration<double>(Clock::now() - start_).count(); }

  /// "m:ss" or "h:mm:ss".
  static std::string format_duration(double seconds);

  /// The text of one status line for `done` items after `elapsed` seconds (no bar, no terminal codes).
  std::string status(std::size_t done, double elapsed, bool final) const;

 private:
  void draw(Clock::time_point now, bool final);

  std::size_t total_;
  std::string label_;
  ProgressOptions opt_;
  std::ostream* out_ = nullptr;
  ProgressOptions::Mode mode_;
  Clock::time_point start_, last_draw_;
  std::size_t done_ = 0;
  std::string message_;
  bool drawn_ = false;
  bool finished_ = false;
};

}  // namespace app
}  // namespace validflow
