// The demo's gradient-share chart as a self-contained SVG (fgbg_demo --plot FILE.svg): one
// horizontal bar per method, split into the foreground, easy-background and hard-background
// shares of Σ|∂L/∂x| the table prints, with the table's section titles between the groups of
// bars. Plain SVG 1.1 text, no script, no external font or stylesheet, no dependency.
#pragma once

#include <algorithm>
#include <cstdio>
#include <ostream>
#include <string>
#include <vector>

namespace demo {

/// One line of the chart: a section title (`is_section`) or a method's three shares in [0, 1].
struct ChartLine {
  std::string label;
  bool is_section = false;
  double fg = 0, easy_bg = 0, hard_bg = 0;
};

/// `text` with the five XML special characters escaped.
inline std::string xml_escape(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (const char ch : text) {
    switch (ch) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&apos;";
        break;
      default:
        out += ch;
    }
  }
  return out;
}

/// Geometry and colours of the chart (pixels).
struct ChartStyle {
  int label_width = 230;  ///< left column for the method names
  int bar_width = 560;    ///< width of a bar holding 100 %
  int row_height = 22;    ///< one method or section line
  int margin = 16;
  const char* colours[3] = {"#d62728", "#9ecae1", "#3182bd"};  ///< fg, easy bg, hard bg
};

/// A number for an SVG attribute, with two decimals.
inline std::string svg_number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", v);
  return buf;
}

/// Writes the chart of `lines` under `title` to `out`. Shares are clamped to [0, 1]; each bar's
/// three segments start where the previous one ends, so a bar is as long as its shares' sum.
inline void write_share_chart(std::ostream& out, const std::string& title,
                              const std::vector<ChartLine>& lines,
                              const ChartStyle& style = ChartStyle{}) {
  const int header = 3 * style.row_height;  // title and legend
  const int width = 2 * style.margin + style.label_width + style.bar_width + 60;
  const int height =
      2 * style.margin + header + static_cast<int>(lines.size() + 1) * style.row_height;
  out << "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
      << "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"" << width
      << "\" height=\"" << height << "\" viewBox=\"0 0 " << width << ' ' << height
      << "\" font-family=\"sans-serif\" font-size=\"12\">\n"
      << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      << "<text x=\"" << style.margin << "\" y=\"" << style.margin + 14
      << "\" font-size=\"15\" font-weight=\"bold\">" << xml_escape(title) << "</text>\n";
  const char* names[3] = {"foreground", "easy background", "hard background"};
  int lx = style.margin;
  const int ly = style.margin + style.row_height + 8;
  for (int k = 0; k < 3; ++k) {
    out << "<rect x=\"" << lx << "\" y=\"" << ly << "\" width=\"12\" height=\"12\" fill=\""
        << style.colours[k] << "\"/>\n"
        << "<text x=\"" << lx + 18 << "\" y=\"" << ly + 11 << "\">" << names[k] << "</text>\n";
    lx += 150;
  }
  const int x0 = style.margin + style.label_width;
  int y = style.margin + header;
  // the 0, 50 and 100 % grid lines behind the bars
  for (int pct : {0, 50, 100}) {
    const double gx = x0 + style.bar_width * pct / 100.0;
    out << "<line x1=\"" << svg_number(gx) << "\" y1=\"" << y << "\" x2=\"" << svg_number(gx)
        << "\" y2=\"" << y + static_cast<int>(lines.size()) * style.row_height
        << "\" stroke=\"#cccccc\"/>\n"
        << "<text x=\"" << svg_number(gx) << "\" y=\"" << y - 4 << "\" text-anchor=\"middle\""
        << " fill=\"#666666\">" << pct << " %</text>\n";
  }
  for (const ChartLine& line : lines) {
    if (line.is_section) {
      out << "<text x=\"" << style.margin << "\" y=\"" << y + 15
          << "\" font-weight=\"bold\" fill=\"#333333\">" << xml_escape(line.label) << "</text>\n";
    } else {
      out << "<text x=\"" << x0 - 8 << "\" y=\"" << y + 15 << "\" text-anchor=\"end\">"
          << xml_escape(line.label) << "</text>\n";
      const double shares[3] = {line.fg, line.easy_bg, line.hard_bg};
      double at = x0;
      for (int k = 0; k < 3; ++k) {
        const double w = style.bar_width * std::clamp(shares[k], 0.0, 1.0);
        out << "<rect x=\"" << svg_number(at) << "\" y=\"" << y + 4 << "\" width=\""
            << svg_number(w) << "\" height=\"" << style.row_height - 8 << "\" fill=\""
            << style.colours[k] << "\"><title>" << xml_escape(line.label) << ": " << names[k] << ' '
            << svg_number(100 * shares[k]) << " %</title></rect>\n";
        at += w;
      }
    }
    y += style.row_height;
  }
  out << "</svg>\n";
}

}  // namespace demo
