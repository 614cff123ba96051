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

    if (argc > 3) {  // the map in the colours of every validflow heatmap (detect/heatmap.hpp), over the image
      const std::vector<float> map = detector.normalized_map(p.anomaly_map);  // 0.5 = the pixel threshold
      validflow::blend_heatmap(rgb.data, rgb.rows, rgb.cols, static_cast<int64_t>(rgb.step), map.data());
      cv::Mat overlay;
      cv::cvtColor(rgb, overlay, cv::COLOR_RGB2BGR);
      if (!cv::imwrite(argv[3], overlay)) throw std::runtime_error(std::string("cannot write ") + argv[3]);
      const validflow::HeatmapScale scale = detector.heatmap_scale();
      std::cout << "heatmap " << argv[3] << "  (navy " << scale.low << " .. teal, faint: below the pixel threshold "
                << scale.threshold << "; yellow .. red " << scale.high << "+: defective)\n";
    }
  } catch (const std::exception& e) {
    std::cerr << "error (" << validflow::to_string(validflow::error_kind(e)) << "): " << validflow::error_message(e)
              << "\n";
    return 1;
  }
  return 0;
}
