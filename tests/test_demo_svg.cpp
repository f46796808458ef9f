// The demo's gradient-share chart (examples/demo_svg.hpp, fgbg_demo --plot FILE.svg): a
// well-formed, self-contained SVG whose bars have the shares' lengths, with every label escaped.
#include <catch2/catch.hpp>

#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "../examples/demo_svg.hpp"

namespace {

/// The opening and closing tags of `svg` balance (self-closing tags and the XML declaration
/// excepted), and no raw '&' starts anything but an entity.
bool well_formed(const std::string& svg) {
  std::vector<std::string> open;
  const std::regex tag("<(/?)([a-zA-Z?!][^\\s/>]*)[^>]*?(/?)>");
  for (auto it = std::sregex_iterator(svg.begin(), svg.end(), tag); it != std::sregex_iterator();
       ++it) {
    const std::string name = (*it)[2];
    if (name[0] == '?' || name[0] == '!' || (*it)[3] == "/") continue;
    if ((*it)[1] == "/") {
      if (open.empty() || open.back() != name) return false;
      open.pop_back();
    } else {
      open.push_back(name);
    }
  }
  const std::regex bad_amp("&(?!(amp|lt|gt|quot|apos);)");
  return open.empty() && !std::regex_search(svg, bad_amp);
}

/// The width attributes of the bar segments of the method labelled `label`, in order.
std::vector<double> bar_widths(const std::string& svg, const std::string& label) {
  std::vector<double> w;
  const std::regex seg("<rect x=\"[0-9.]+\" y=\"[0-9]+\" width=\"([0-9.]+)\"[^>]*><title>" + label +
                       ": ");
  for (auto it = std::sregex_iterator(svg.begin(), svg.end(), seg); it != std::sregex_iterator();
       ++it)
    w.push_back(std::stod((*it)[1]));
  return w;
}

}  // namespace

TEST_CASE("demo chart: well-formed SVG, bars as long as the shares, labels escaped", "[demo]") {
  const std::vector<demo::ChartLine> lines = {
      {"soft sampling", true},
      {"focal a=.25 g=2", false, 0.0002, 0.0034, 0.9964},
      {"BCE <sum> & \"mean\"", false, 0.25, 0.5, 0.25},
      {"ranking", true},
      {"AP loss", false, 0.5, 0.0089, 0.4911},
      {"out of range", false, -0.5, 1.5, 0.0},
  };
  std::ostringstream out;
  demo::write_share_chart(out, "title with < & >", lines);
  const std::string svg = out.str();
  REQUIRE(svg.rfind("<?xml", 0) == 0);
  CHECK(svg.find("</svg>\n") == svg.size() - 7);
  CHECK(well_formed(svg));
  CHECK(svg.find("title with &lt; &amp; &gt;") != std::string::npos);
  CHECK(svg.find("BCE &lt;sum&gt; &amp; &quot;mean&quot;") != std::string::npos);
  CHECK(svg.find("BCE <sum>") == std::string::npos);
  CHECK(svg.find("<script") == std::string::npos);  // self-contained, static
  CHECK(svg.find("href") == std::string::npos);
  const demo::ChartStyle style;
  // three segments per method, of width bar_width × share (clamped to [0, 1])
  const auto focal = bar_widths(svg, "focal a=.25 g=2");
  REQUIRE(focal.size() == 3);
  CHECK(focal[0] == Approx(style.bar_width * 0.0002).margin(0.006));
  CHECK(focal[1] == Approx(style.bar_width * 0.0034).margin(0.006));
  CHECK(focal[2] == Approx(style.bar_width * 0.9964).margin(0.006));
  const auto bce = bar_widths(svg, "BCE &lt;sum&gt; &amp; &quot;mean&quot;");
  REQUIRE(bce.size() == 3);
  CHECK(bce[1] == Approx(style.bar_width * 0.5).margin(0.006));
  const auto clamp = bar_widths(svg, "out of range");
  REQUIRE(clamp.size() == 3);
  CHECK(clamp[0] == 0.0);
  CHECK(clamp[1] == Approx(style.bar_width));
  // sections are text only; every method's bar has 3 segments
  CHECK(bar_widths(svg, "soft sampling").empty());
  CHECK(svg.find(">soft sampling</text>") != std::string::npos);
  CHECK(svg.find(">ranking</text>") != std::string::npos);
  std::size_t titles = 0;
  for (std::size_t at = svg.find("<title>"); at != std::string::npos;
       at = svg.find("<title>", at + 1))
    ++titles;
  CHECK(titles == 4 * 3);
  // an empty chart is still a well-formed document
  std::ostringstream empty;
  demo::write_share_chart(empty, "empty", {});
  CHECK(well_formed(empty.str()));
}
