#include "analysis.h"

#include <algorithm>
#include <cctype>
#include <nlohmann/json.hpp>

namespace oxg::passive_headers {
namespace {

using sdk::EqualsIgnoreCase;
using sdk::Finding;
using sdk::HttpMessage;
using sdk::Severity;

constexpr size_t kMaxEvidence = 512;
constexpr size_t kMaxTarget = 2048;  // the bus's limit on Finding.target

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Header values are bytes; the bus refuses findings that are not UTF-8. Printable ASCII is
// enough for evidence and keeps every finding acceptable.
std::string Printable(std::string_view s, size_t max) {
  std::string out;
  out.reserve(std::min(s.size(), max));
  for (char c : s) {
    if (out.size() >= max) {
      out.append("...");
      break;
    }
    const auto u = static_cast<unsigned char>(c);
    out.push_back(u >= 0x20 && u < 0x7f ? c : '?');
  }
  return out;
}

bool IsHtml(const HttpMessage& response) {
  if (const auto ct = response.Header("Content-Type")) {
    std::string media = Lower(Trim(ct->substr(0, ct->find(';'))));
    return media == "text/html" || media == "application/xhtml+xml";
  }
  // No Content-Type: browsers sniff; so do we, on the document's first bytes.
  std::string_view body = response.body;
  while (!body.empty() && std::isspace(static_cast<unsigned char>(body.front()))) {
    body.remove_prefix(1);
  }
  const std::string head = Lower(body.substr(0, 14));
  return head.rfind("<!doctype html", 0) == 0 || head.rfind("<html", 0) == 0;
}

// "1.2", "/2" or "v3": a product version, not just a product name (an "S3" in "AmazonS3" is not).
bool RevealsVersion(std::string_view v) {
  for (size_t i = 0; i < v.size(); ++i) {
    if (!std::isdigit(static_cast<unsigned char>(v[i]))) continue;
    if (i > 0 && v[i - 1] == '/') return true;
    size_t j = i;
    while (j < v.size() && std::isdigit(static_cast<unsigned char>(v[j]))) ++j;
    if (j + 1 < v.size() && v[j] == '.' && std::isdigit(static_cast<unsigned char>(v[j + 1]))) {
      return true;
    }
    i = j;
  }
  return false;
}

struct Context {
  const RequestInfo& request;
  const HttpMessage& response;
  std::vector<Issue>* out;

  void Add(std::string type, std::string subject, std::string message, Severity severity,
           std::string evidence, std::vector<std::pair<std::string, std::string>> metadata) {
    Issue issue;
    issue.dedup_key = type + '\n' + request.host + '\n' + Lower(subject);
    issue.finding.type = std::move(type);
    issue.finding.message = Printable(message, 1024);
    issue.finding.severity = severity;
    issue.finding.target = Printable(request.url, kMaxTarget);
    issue.finding.evidence = Printable(evidence, kMaxEvidence);
    metadata.emplace_back("host", request.host);
    metadata.emplace_back("status", std::to_string(response.status));
    for (auto& [k, v] : metadata) v = Printable(v, 256);
    issue.finding.metadata = std::move(metadata);
    out->push_back(std::move(issue));
  }

  std::string StatusEvidence() const {
    std::string e =
        response.version + " " + std::to_string(response.status) + " " + response.reason;
    if (const auto ct = response.Header("Content-Type")) e += "; Content-Type: " + std::string(*ct);
    return e;
  }

  void MissingHeader(std::string_view header, Severity severity, std::string why,
                     std::string evidence_extra = "") {
    std::string evidence = StatusEvidence() + "; no " + std::string(header) + " header";
    if (!evidence_extra.empty()) evidence += "; " + evidence_extra;
    Add("missing-security-header", std::string(header),
        "HTML response without " + std::string(header) + ": " + why, severity, std::move(evidence),
        {{"header", std::string(header)}});
  }
};

void CheckSecurityHeaders(Context& c, const Config& config) {
  const HttpMessage& r = c.response;
  if (r.status < 200 || r.status > 299 || !IsHtml(r)) return;
  const std::optional<std::string_view> csp = r.Header("Content-Security-Policy");
  if (config.Enabled("content-security-policy") && !csp) {
    std::string extra;
    if (r.Header("Content-Security-Policy-Report-Only")) {
      extra = "a Content-Security-Policy-Report-Only header is present but enforces nothing";
    }
    c.MissingHeader("Content-Security-Policy", Severity::kMedium,
                    "nothing limits where scripts, styles and frames may come from", extra);
  }
  if (config.Enabled("x-content-type-options")) {
    const auto xcto = r.Header("X-Content-Type-Options");
    if (!xcto || !EqualsIgnoreCase(Trim(*xcto), "nosniff")) {
      c.MissingHeader(
          "X-Content-Type-Options", Severity::kLow,
          "browsers may MIME-sniff responses into executable content",
          xcto ? "X-Content-Type-Options: " + std::string(*xcto) + " (not nosniff)" : "");
    }
  }
  if (config.Enabled("x-frame-options") && !r.Header("X-Frame-Options")) {
    bool frame_ancestors = false;
    for (std::string_view policy : r.Headers("Content-Security-Policy")) {
      if (Lower(policy).find("frame-ancestors") != std::string::npos) frame_ancestors = true;
    }
    if (!frame_ancestors) {
      c.MissingHeader("X-Frame-Options", Severity::kMedium,
                      "the page may be framed by any site (clickjacking); neither "
                      "X-Frame-Options nor CSP frame-ancestors is set");
    }
  }
  if (config.Enabled("strict-transport-security") && c.request.https &&
      !r.Header("Strict-Transport-Security")) {
    c.MissingHeader("Strict-Transport-Security", Severity::kLow,
                    "browsers may reach the site over plain HTTP first");
  }
  if (config.Enabled("referrer-policy") && !r.Header("Referrer-Policy")) {
    c.MissingHeader("Referrer-Policy", Severity::kInfo,
                    "full URLs may leak to other sites in the Referer header");
  }
}

void CheckCookies(Context& c, const Config& config) {
  for (std::string_view header : c.response.Headers("Set-Cookie")) {
    std::string_view rest = header;
    const size_t semi = rest.find(';');
    const std::string_view pair = Trim(rest.substr(0, semi));
    rest = semi == std::string_view::npos ? std::string_view() : rest.substr(semi + 1);
    const size_t eq = pair.find('=');
    const std::string name(Trim(pair.substr(0, eq)));
    if (name.empty()) continue;
    bool secure = false, http_only = false, same_site = false, deleted = false;
    std::string attributes;
    while (!rest.empty()) {
      const size_t next = rest.find(';');
      const std::string_view attr = Trim(rest.substr(0, next));
      rest = next == std::string_view::npos ? std::string_view() : rest.substr(next + 1);
      if (attr.empty()) continue;
      attributes += "; ";
      attributes += attr;
      const size_t aeq = attr.find('=');
      const std::string key = Lower(Trim(attr.substr(0, aeq)));
      const std::string_view value =
          aeq == std::string_view::npos ? "" : Trim(attr.substr(aeq + 1));
      if (key == "secure") secure = true;
      if (key == "httponly") http_only = true;
      if (key == "samesite") same_site = !value.empty();
      // A cookie being cleared holds nothing worth protecting.
      if (key == "max-age" && (value.starts_with('-') || value == "0")) deleted = true;
      if (key == "expires" && value.find("1970") != std::string_view::npos) deleted = true;
    }
    if (deleted) continue;
    std::vector<std::string> missing;
    if (config.Enabled("cookie-secure") && c.request.https && !secure) missing.push_back("Secure");
    if (config.Enabled("cookie-httponly") && !http_only) missing.push_back("HttpOnly");
    if (config.Enabled("cookie-samesite") && !same_site) missing.push_back("SameSite");
    if (missing.empty()) continue;
    std::string list;
    for (const std::string& m : missing) list += (list.empty() ? "" : ", ") + m;
    std::string why;
    if (!secure && c.request.https) why += " It can leak over plain HTTP.";
    if (!http_only) why += " Scripts can read it.";
    if (!same_site) why += " Cross-site requests carry it under the browser's default.";
    // The value never goes into a finding, even when a raw variant delivered it.
    Context& ctx = c;
    ctx.Add("insecure-cookie", name, "cookie \"" + name + "\" set without " + list + "." + why,
            c.request.https && !secure ? Severity::kMedium : Severity::kLow,
            "Set-Cookie: " + name + "=[REDACTED]" + attributes,
            {{"cookie", name}, {"missing", list}});
  }
}

void CheckBanners(Context& c, const Config& config) {
  if (!config.Enabled("server-banner")) return;
  struct Banner {
    std::string_view header;
    bool always;  // the header exists only to state a version
  };
  static constexpr Banner kBanners[] = {{"Server", false},
                                        {"X-Powered-By", false},
                                        {"X-AspNet-Version", true},
                                        {"X-AspNetMvc-Version", true}};
  for (const Banner& b : kBanners) {
    const auto value = c.response.Header(b.header);
    if (!value || Trim(*value).empty()) continue;
    if (!b.always && !RevealsVersion(*value)) continue;
    c.Add("verbose-server-banner", std::string(b.header),
          std::string(b.header) + " header reveals product versions: " + std::string(*value),
          Severity::kLow, std::string(b.header) + ": " + std::string(*value),
          {{"header", std::string(b.header)}, {"value", std::string(*value)}});
  }
}

}  // namespace

sdk::Status ParseConfig(std::string_view json, Config* config) {
  auto invalid = [](std::string m) {
    return sdk::Status(sdk::StatusCode::kInvalidArgument, "OXG_PLUGIN_CONFIG: " + m);
  };
  if (Trim(json).empty()) return {};
  const nlohmann::json j = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return invalid("not a JSON object");
  for (const auto& [key, value] : j.items()) {
    if (key != "disabled_checks") return invalid("unknown key \"" + key + "\"");
    if (!value.is_array()) return invalid("disabled_checks: not an array");
    for (const auto& id : value) {
      if (!id.is_string()) return invalid("disabled_checks: not a string");
      const std::string s = id.get<std::string>();
      if (std::find(std::begin(kCheckIds), std::end(kCheckIds), s) == std::end(kCheckIds)) {
        return invalid("disabled_checks: unknown check \"" + s + "\"");
      }
      config->disabled_checks.insert(s);
    }
  }
  return {};
}

RequestInfo DescribeRequest(const HttpMessage& request) {
  RequestInfo info;
  info.url = request.Url();
  const size_t scheme_end = info.url.find("://");
  if (scheme_end == std::string::npos) return info;
  info.https = Lower(info.url.substr(0, scheme_end)) == "https";
  const size_t start = scheme_end + 3;
  size_t end = info.url.find_first_of("/?#", start);
  if (end == std::string::npos) end = info.url.size();
  std::string authority = info.url.substr(start, end - start);
  if (const size_t at = authority.rfind('@'); at != std::string::npos) {
    authority.erase(0, at + 1);  // userinfo is not part of the host
  }
  info.host = Lower(authority);
  return info;
}

std::vector<Issue> Analyze(const RequestInfo& request, const HttpMessage& response,
                           const Config& config) {
  std::vector<Issue> out;
  Context c{request, response, &out};
  CheckSecurityHeaders(c, config);
  CheckCookies(c, config);
  CheckBanners(c, config);
  return out;
}

void PassiveHeaders::OnRequest(const HttpMessage& request) {
  if (request.flow_id.empty()) return;
  if (auto it = pending_.find(request.flow_id); it != pending_.end()) {
    pending_order_.erase(it->second.order);
    pending_.erase(it);
  }
  if (pending_.size() >= kMaxPending) {
    pending_.erase(pending_order_.front());
    pending_order_.pop_front();
  }
  pending_order_.push_back(request.flow_id);
  pending_.emplace(request.flow_id,
                   Pending{DescribeRequest(request), std::prev(pending_order_.end())});
}

std::vector<sdk::Finding> PassiveHeaders::OnResponse(const HttpMessage& response) {
  std::vector<sdk::Finding> findings;
  auto it = pending_.find(response.flow_id);
  if (it == pending_.end()) {
    ++unpaired_;
    return findings;
  }
  const RequestInfo info = std::move(it->second.info);
  pending_order_.erase(it->second.order);
  pending_.erase(it);
  if (info.host.empty()) {
    ++unpaired_;  // no URL to report against or deduplicate by
    return findings;
  }
  for (Issue& issue : Analyze(info, response, config_)) {
    if (FirstReport(issue.dedup_key)) {
      findings.push_back(std::move(issue.finding));
    } else {
      ++suppressed_;
    }
  }
  return findings;
}

bool PassiveHeaders::FirstReport(const std::string& key) {
  if (reported_.contains(key)) return false;
  if (reported_.size() >= kMaxReported) {
    reported_.erase(reported_order_.front());
    reported_order_.pop_front();
  }
  reported_.insert(key);
  reported_order_.push_back(key);
  return true;
}

}  // namespace oxg::passive_headers
