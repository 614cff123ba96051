// Scores one image with a model file written by `validflow export`, prints the decision and writes a heatmap.
//   embed_detector MODEL.vfm IMAGE [HEATMAP.png]
// Uses validflow::Detector, whose header needs no LibTorch: this file compiles in about a second.
#include <validflow/detector.hpp>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <iostream>

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: embed_detector MODEL.vfm IMAGE [HEATMAP.png]\n";
    return 2;
  }
  try {
    const validflow::Detector detector(argv[1]);  // loads and verifies the model file (CPU, fp32)

    cv::Mat bgr = cv::imread(argv[2], cv::IMREAD_COLOR);  // 8-bit, 3 channels
    if (bgr.empty()) throw std::runtime_error(std::string("cannot read image ") + argv[2]);
    cv::Mat rgb;
    cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
    const validflow::ImageView image{rgb.data, rgb.rows, rgb.cols, 3, static_cast<int64_t>(rgb.step)};

    const validflow::Prediction p = detector.predict(image);
    std::cout << (p.anomalous ? "ANOMALOUS" : "OK") << "  score " << p.score << "  normalized " << p.normalized_score
              << "  (threshold " << detector.threshold() << ")\n";

    if (argc > 3) {  // the normalised map (0.5 = pixel threshold) in colour over the image
      std::vector<float> map = detector.normalized_map(p.anomaly_map);
      cv::Mat gray;
      cv::Mat(static_cast<int>(p.height), static_cast<int>(p.width), CV_32FC1, map.data()).convertTo(gray, CV_8U, 255);
      cv::Mat colour, overlay;
      cv::applyColorMap(gray, colour, cv::COLORMAP_JET);
      cv::addWeighted(bgr, 0.5, colour, 0.5, 0.0, overlay);
      if (!cv::imwrite(argv[3], overlay)) throw std::runtime_error(std::string("cannot write ") + argv[3]);
      std::cout << "heatmap " << argv[3] << "\n";
    }
  } catch (const std::exception& e) {
    std::cerr << "error (" << validflow::to_string(validflow::error_kind(e)) << "): " << validflow::error_message(e)
              << "\n";
    return 1;
  }
  return 0;
}
