// S3Client over libcurl with its SigV4 signer (docs/dependencies.md).
#include "hookfs/s3.h"

#include <curl/curl.h>
#include <openssl/evp.h>

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <mutex>
#include <sstream>

namespace hookfs {
namespace {

std::string Sha256Hex(std::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr);
  static const char* hex = "0123456789abcdef";
  std::string out;
  out.reserve(len * 2);
  for (unsigned i = 0; i < len; ++i) {
    out.push_back(hex[md[i] >> 4]);
    out.push_back(hex[md[i] & 15]);
  }
  return out;
}

bool KeyOk(const std::string& key) {
  if (key.empty() || key.size() > 1024 || key.front() == '/') return false;
  for (unsigned char c : key)
    if (!(isalnum(c) || c == '/' || c == '.' || c == '_' || c == '-')) return false;
  return true;
}

std::string Trim(std::string s) {
  size_t b = s.find_first_not_of(" \t\r\n");
  size_t e = s.find_last_not_of(" \t\r\n");
  return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
}

// The text of the first <tag>…</tag> at or after pos (tiny XML reader: S3's
// answers are flat and the keys we write need no entities).
std::string XmlTag(const std::string& xml, const std::string& tag, size_t pos = 0,
                   size_t* end = nullptr) {
  size_t b = xml.find("<" + tag + ">", pos);
  if (b == std::string::npos) return {};
  b += tag.size() + 2;
  size_t e = xml.find("</" + tag + ">", b);
  if (e == std::string::npos) return {};
  if (end) *end = e + tag.size() + 3;
  return xml.substr(b, e - b);
}

std::string Unquote(std::string s) {
  for (const char* q : {"&quot;", "&#34;"}) {
    size_t p;
    while ((p = s.find(q)) != std::string::npos) s.replace(p, strlen(q), "\"");
  }
  if (s.size() >= 2 && s.front() == '"' && s.back() == '"') s = s.substr(1, s.size() - 2);
  return s;
}

struct Response {
  long http = 0;
  uint64_t max_body = 0;
  bool too_big = false;
  std::string body;
  std::string etag;
  uint64_t content_length = 0;
  bool has_length = false;
};

size_t OnBody(char* p, size_t size, size_t n, void* ud) {
  auto* r = static_cast<Response*>(ud);
  if (r->body.size() + size * n > r->max_body) {
    r->too_big = true;
    return 0;  // aborts the transfer (CURLE_WRITE_ERROR)
  }
  r->body.append(p, size * n);
  return size * n;
}

size_t OnHeader(char* p, size_t size, size_t n, void* ud) {
  auto* r = static_cast<Response*>(ud);
  std::string line(p, size * n);
  size_t colon = line.find(':');
  if (colon != std::string::npos) {
    std::string name = line.substr(0, colon);
    for (auto& c : name) c = static_cast<char>(tolower(static_cast<unsigned char>(c)));
    std::string value = Trim(line.substr(colon + 1));
    if (name == "etag") r->etag = Unquote(value);
    if (name == "content-length") {
      r->content_length = strtoull(value.c_str(), nullptr, 10);
      r->has_length = true;
    }
  }
  return size * n;
}

struct ReadState {
  std::string_view data;
  size_t pos = 0;
};

size_t OnRead(char* buf, size_t size, size_t n, void* ud) {
  auto* s = static_cast<ReadState*>(ud);
  size_t k = std::min(size * n, s->data.size() - s->pos);
  memcpy(buf, s->data.data() + s->pos, k);
  s->pos += k;
  return k;
}

class S3Impl final : public S3Client {
 public:
  explicit S3Impl(S3Options o) : o_(std::move(o)) {
    while (!o_.url.empty() && o_.url.back() == '/') o_.url.pop_back();
    sigv4_ = "aws:amz:" + o_.region + ":s3";
    userpwd_ = o_.credentials.access_key + ":" + o_.credentials.secret_key;
  }
  ~S3Impl() override {
    for (CURL* c : pool_) curl_easy_cleanup(c);
  }

  Status CreateBucket() override {
    Response r;
    HOOKFS_RETURN_IF_ERROR(Do("PUT", "", "", {}, std::string_view(), &r));
    if (r.http == 200) return Status::OK();
    if (r.http == 409 && XmlTag(r.body, "Code") == "BucketAlreadyOwnedByYou") return Status::OK();
    return HttpError("create bucket", "", r);
  }

  Status PutIfAbsent(const std::string& key, std::string_view data) override {
    if (!KeyOk(key)) return BadKey(key);
    Response r;
    HOOKFS_RETURN_IF_ERROR(Do("PUT", key, "", {"If-None-Match: *"}, data, &r));
    if (r.http == 200 || r.http == 412) return Status::OK();
    return HttpError("put", key, r);
  }

  Result<std::string> Get(const std::string& key) override {
    if (!KeyOk(key)) return BadKey(key);
    Response r;
    HOOKFS_RETURN_IF_ERROR(Do("GET", key, "", {}, std::string_view(), &r));
    if (r.http == 200) return std::move(r.body);
    return HttpError("get", key, r);
  }

  Result<std::string> GetRange(const std::string& key, uint64_t offset, uint64_t length) override {
    if (!KeyOk(key)) return BadKey(key);
    if (length == 0) return std::string();
    Response r;
    std::string range = "Range: bytes=" + std::to_string(offset) + "-" + std::to_string(offset + length - 1);
    HOOKFS_RETURN_IF_ERROR(Do("GET", key, "", {range}, std::string_view(), &r));
    if (r.http == 206) return std::move(r.body);
    if (r.http == 200) {  // a server that ignores Range: cut it ourselves
      if (offset >= r.body.size()) return std::string();
      return r.body.substr(offset, length);
    }
    if (r.http == 416) return std::string();  // offset at or past the end
    return HttpError("get range", key, r);
  }

  Result<S3ObjectInfo> Head(const std::string& key) override {
    if (!KeyOk(key)) return BadKey(key);
    Response r;
    HOOKFS_RETURN_IF_ERROR(Do("HEAD", key, "", {}, std::string_view(), &r));
    if (r.http == 200) return S3ObjectInfo{key, r.content_length, r.etag};
    return HttpError("head", key, r);
  }

  Status Delete(const std::string& key) override {
    if (!KeyOk(key)) return BadKey(key);
    Response r;
    HOOKFS_RETURN_IF_ERROR(Do("DELETE", key, "", {}, std::string_view(), &r));
    if (r.http == 204 || r.http == 200 || r.http == 404) return Status::OK();
    return HttpError("delete", key, r);
  }

  Result<std::vector<S3ObjectInfo>> List(const std::string& prefix) override {
    if (!prefix.empty() && !KeyOk(prefix)) return BadKey(prefix);
    std::vector<S3ObjectInfo> out;
    std::string token;
    for (;;) {
      // SigV4 wants the canonical query: names sorted, values RFC 3986 encoded.
      std::string q;
      if (!token.empty()) q += "continuation-token=" + Escape(token) + "&";
      q += "list-type=2&max-keys=" + std::to_string(o_.list_page);
      if (!prefix.empty()) q += "&prefix=" + Escape(prefix);
      Response r;
      HOOKFS_RETURN_IF_ERROR(Do("GET", "", q, {}, std::string_view(), &r));
      if (r.http != 200) return HttpError("list", prefix, r);
      size_t pos = 0, end = 0;
      for (;;) {
        std::string c = XmlTag(r.body, "Contents", pos, &end);
        if (c.empty()) break;
        pos = end;
        out.push_back({XmlTag(c, "Key"), strtoull(XmlTag(c, "Size").c_str(), nullptr, 10),
                       Unquote(XmlTag(c, "ETag"))});
      }
      if (XmlTag(r.body, "IsTruncated") != "true") break;
      token = XmlTag(r.body, "NextContinuationToken");
      if (token.empty()) return Status::IOError("s3 list " + prefix + ": truncated without a token");
    }
    return out;
  }

 private:
  Status BadKey(const std::string& key) {
    return Status::InvalidArgument("s3: key '" + key + "' has characters outside [A-Za-z0-9/._-]");
  }

  std::string Escape(const std::string& s) {
    std::string out;
    for (unsigned char c : s) {
      if (isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
        out.push_back(static_cast<char>(c));
      } else {
        char b[4];
        snprintf(b, sizeof b, "%%%02X", c);
        out += b;
      }
    }
    return out;
  }

  // Never echo the secret, whatever the server put in its answer.
  std::string Scrub(std::string m) const {
    const std::string& s = o_.credentials.secret_key;
    if (!s.empty()) {
      size_t p;
      while ((p = m.find(s)) != std::string::npos) m.replace(p, s.size(), "<secret>");
    }
    return m;
  }

  Status HttpError(const std::string& what, const std::string& key, const Response& r) {
    std::string code = XmlTag(r.body, "Code");
    std::string m = Scrub("s3 " + what + " " + (key.empty() ? o_.url : key) + ": HTTP " +
                          std::to_string(r.http) + (code.empty() ? "" : " " + code));
    if (r.http == 404) return Status::NotFound(m);
    if (r.http == 401 || r.http == 403) return Status::PermissionDenied(m);
    if (r.http == 503 || r.http == 504) return Status::TimedOut(m);
    return Status::IOError(m);
  }

  CURL* Take() {
    std::lock_guard lk(mu_);
    if (!pool_.empty()) {
      CURL* c = pool_.back();
      pool_.pop_back();
      curl_easy_reset(c);
      return c;
    }
    return curl_easy_init();
  }
  void Give(CURL* c) {
    std::lock_guard lk(mu_);
    if (pool_.size() < 8) {
      pool_.push_back(c);
    } else {
      curl_easy_cleanup(c);
    }
  }

  // One signed request; only transport failures are errors here, the HTTP
  // status is the caller's to judge.
  Status Do(const char* method, const std::string& key, const std::string& query,
            const std::vector<std::string>& headers, std::string_view body, Response* r) {
    CURL* c = Take();
    if (!c) return Status::IOError("s3: curl_easy_init failed");
    // Error documents are small; object bodies are bounded by max_get_bytes.
    r->max_body = std::max<uint64_t>(o_.max_get_bytes, 1 << 20);
    std::string url = o_.url + (key.empty() ? "" : "/" + key) + (query.empty() ? "" : "?" + query);
    std::string method_s = method;
    curl_slist* hs = nullptr;
    std::string sha = "x-amz-content-sha256: " + Sha256Hex(body);
    hs = curl_slist_append(hs, sha.c_str());
    for (const auto& h : headers) hs = curl_slist_append(hs, h.c_str());
    ReadState rs{body, 0};
    curl_easy_setopt(c, CURLOPT_URL, url.c_str());
    curl_easy_setopt(c, CURLOPT_AWS_SIGV4, sigv4_.c_str());
    curl_easy_setopt(c, CURLOPT_USERPWD, userpwd_.c_str());
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hs);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(o_.connect_timeout.count()));
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, static_cast<long>(o_.timeout.count()));
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 64L * 1024);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, static_cast<long>(o_.stall_timeout.count()));
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, OnBody);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, OnHeader);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
    if (method_s == "PUT") {
      curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
      curl_easy_setopt(c, CURLOPT_READFUNCTION, OnRead);
      curl_easy_setopt(c, CURLOPT_READDATA, &rs);
      curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(body.size()));
    } else if (method_s == "HEAD") {
      curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    } else if (method_s == "DELETE") {
      curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, "DELETE");
    }
    CURLcode rc = curl_easy_perform(c);
    curl_slist_free_all(hs);
    if (rc == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->http);
    Give(c);
    if (rc == CURLE_OK) return Status::OK();
    if (r->too_big)
      return Status::Corruption(Scrub("s3 " + method_s + " " + url + ": the server sent more than " +
                                      std::to_string(r->max_body) + " bytes"));
    std::string m = Scrub("s3 " + method_s + " " + url + ": " + curl_easy_strerror(rc));
    switch (rc) {
      case CURLE_OPERATION_TIMEDOUT:
      case CURLE_COULDNT_CONNECT:
      case CURLE_COULDNT_RESOLVE_HOST:
      case CURLE_SEND_ERROR:
      case CURLE_RECV_ERROR:
      case CURLE_GOT_NOTHING: return Status::TimedOut(m);
      default: return Status::IOError(m);
    }
  }

  S3Options o_;
  std::string sigv4_, userpwd_;
  std::mutex mu_;
  std::vector<CURL*> pool_;
};

}  // namespace

Result<S3Credentials> LoadS3Credentials(const std::string& file) {
  S3Credentials c;
  if (file.empty()) {
    const char* a = getenv("AWS_ACCESS_KEY_ID");
    const char* s = getenv("AWS_SECRET_ACCESS_KEY");
    if (!a || !*a || !s || !*s)
      return Status::InvalidArgument("s3: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or --s3-credentials");
    c.access_key = a;
    c.secret_key = s;
    return c;
  }
  std::ifstream in(file);
  if (!in) return Status::InvalidArgument("s3: cannot read credentials file " + file);
  std::string line, section;
  while (std::getline(in, line)) {
    line = Trim(line);
    if (line.empty() || line[0] == '#' || line[0] == ';') continue;
    if (line.front() == '[') {
      section = Trim(line.substr(1, line.find(']') - 1));
      continue;
    }
    if (section != "default") continue;
    size_t eq = line.find('=');
    if (eq == std::string::npos) continue;
    std::string k = Trim(line.substr(0, eq)), v = Trim(line.substr(eq + 1));
    if (k == "aws_access_key_id") c.access_key = v;
    if (k == "aws_secret_access_key") c.secret_key = v;
  }
  if (c.access_key.empty() || c.secret_key.empty())
    return Status::InvalidArgument("s3: " + file +
                                   ": [default] needs aws_access_key_id and aws_secret_access_key");
  return c;
}

Result<std::unique_ptr<S3Client>> S3Client::Open(const S3Options& o) {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  if (o.url.rfind("http://", 0) != 0 && o.url.rfind("https://", 0) != 0)
    return Status::InvalidArgument("s3: URL must be http(s)://HOST[:PORT]/BUCKET: " + o.url);
  size_t slash = o.url.find('/', o.url.find("://") + 3);
  if (slash == std::string::npos || slash + 1 >= o.url.size())
    return Status::InvalidArgument("s3: URL names no bucket (http(s)://HOST[:PORT]/BUCKET): " + o.url);
  if (o.credentials.access_key.empty() || o.credentials.secret_key.empty())
    return Status::InvalidArgument("s3: no credentials");
  return std::unique_ptr<S3Client>(new S3Impl(o));
}

std::string S3Client::PartKey(const std::string& key, uint64_t index) {
  char b[32];
  snprintf(b, sizeof b, ".part%06llu", static_cast<unsigned long long>(index));
  return key + b;
}

Status S3Client::PutParts(const std::string& key, uint64_t size, const PartReader& read,
                          uint64_t part_size) {
  if (part_size == 0) return Status::InvalidArgument("s3 put parts: part size 0");
  const uint64_t count = size == 0 ? 0 : (size + part_size - 1) / part_size;
  std::string buf;
  for (uint64_t i = 0; i < count; ++i) {
    const uint64_t off = i * part_size;
    const size_t len = static_cast<size_t>(std::min(part_size, size - off));
    buf.resize(len);
    HOOKFS_RETURN_IF_ERROR(read(off, buf.data(), len));
    HOOKFS_RETURN_IF_ERROR(PutIfAbsent(PartKey(key, i), buf));
  }
  // The manifest last: its presence means every part is there.
  std::string manifest = "hookfs-parts 1 " + std::to_string(size) + " " + std::to_string(part_size) +
                         " " + std::to_string(count) + "\n";
  return PutIfAbsent(ManifestKey(key), manifest);
}

Status S3Client::GetParts(const std::string& key, const PartWriter& write) {
  HOOKFS_ASSIGN_OR_RETURN(std::string manifest, Get(ManifestKey(key)));
  std::istringstream in(manifest);
  std::string magic;
  int format = 0;
  uint64_t size = 0, part_size = 0, count = 0;
  if (!(in >> magic >> format >> size >> part_size >> count) || magic != "hookfs-parts" ||
      format != 1 || part_size == 0 || count != (size + part_size - 1) / part_size)
    return Status::Corruption("s3 " + ManifestKey(key) + ": not a parts manifest");
  for (uint64_t i = 0; i < count; ++i) {
    const uint64_t off = i * part_size;
    const uint64_t want = std::min(part_size, size - off);
    HOOKFS_ASSIGN_OR_RETURN(std::string part, Get(PartKey(key, i)));
    if (part.size() != want)
      return Status::Corruption("s3 " + PartKey(key, i) + ": " + std::to_string(part.size()) +
                                " bytes, manifest says " + std::to_string(want));
    HOOKFS_RETURN_IF_ERROR(write(off, part));
  }
  return Status::OK();
}

}  // namespace hookfs
