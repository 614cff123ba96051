#include "progress.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <sstream>

#include <unistd.h>

namespace validflow {
namespace app {

ProgressBar::ProgressBar(std::size_t total, std::string label, ProgressOptions opt)
    : total_(total), label_(std::move(label)), opt_(std::move(opt)), start_(Clock::now()), last_draw_(start_) {
  out_ = opt_.out ? opt_.out : &std::cerr;
  mode_ = opt_.mode;
  if (mode_ == ProgressOptions::Mode::automatic)
    mode_ =
        (out_ == &std::cerr && ::isatty(::fileno(stderr))) ? ProgressOptions::Mode::tty : ProgressOptions::Mode::lines;
}

ProgressBar::~ProgressBar() {
  // Leave the terminal on a fresh line if the loop was left early (e.g. by an exception).
  if (!finished_ && drawn_ && mode_ == ProgressOptions::Mode::tty) *out_ << '\n' << std::flush;
}

void ProgressBar::update(std::size_t done, const std::string& message) {
  done_ = done;
  if (!message.empty()) message_ = message;
  const auto now = Clock::now();
  const double since = std::chrono::duration<double>(now - last_draw_).count();
  if (mode_ == ProgressOptions::Mode::tty) {
    if (!drawn_ || since >= 0.1 || (total_ > 0 && done_ >= total_)) draw(now, false);
  } else if (mode_ == ProgressOptions::Mode::lines) {
    if (!drawn_ || since >= opt_.line_interval_s) draw(now, false);
  }
}

void ProgressBar::finish(const std::string& message) {
  if (finished_) return;
  if (!message.empty()) message_ = message;
  if (mode_ != ProgressOptions::Mode::silent) draw(Clock::now(), true);
  finished_ = true;
}

std::string ProgressBar::format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const long s = std::lround(seconds);
  char b[32];
  if (s >= 3600)
    std::snprintf(b, sizeof b, "%ld:%02ld:%02ld", s / 3600, (s / 60) % 60, s % 60);
  else
    std::snprintf(b, sizeof b, "%ld:%02ld", s / 60, s % 60);
  return b;
}

std::string ProgressBar::status(std::size_t done, double elapsed, bool final) const {
  std::ostringstream s;
  if (total_ > 0)
    s << done << '/' << total_ << " (" << (done >= total_ ? 100 : done * 100 / total_) << "%)";
  else
    s << done;
  const double rate = elapsed > 0 ? static_cast<double>(done) / elapsed : 0.0;
  char r[48];
  std::snprintf(r, sizeof r, "%.1f %s/s", rate, opt_.unit.c_str());
  s << "  " << r;
  if (final)
    s << "  took " << format_duration(elapsed);
  else if (total_ > 0 && rate > 0 && done < total_)
    s << "  ETA " << format_duration(static_cast<double>(total_ - done) / rate);
  if (!message_.empty()) s << "  " << message_;
  return s.str();
}

void ProgressBar::draw(Clock::time_point now, bool final) {
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  const std::string st = status(done_, elapsed, final);
  if (mode_ == ProgressOptions::Mode::tty) {
    std::string bar;
    if (total_ > 0) {
      const double frac = std::min(1.0, static_cast<double>(done_) / static_cast<double>(total_));
      const int fill = static_cast<int>(frac * opt_.bar_width);
      bar = "[" + std::string(static_cast<std::size_t>(fill), '#') +
            std::string(static_cast<std::size_t>(opt_.bar_width - fill), '-') + "] ";
    }
    *out_ << "\r\033[K" << label_ << ' ' << bar << st;
    if (final) *out_ << '\n';
    *out_ << std::flush;
  } else {
    *out_ << label_ << ": " << st << (final ? "  done" : "") << '\n' << std::flush;
  }
  drawn_ = true;
  last_draw_ = now;
}

}  // namespace app
}  // namespace validflow
