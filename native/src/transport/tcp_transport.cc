#include "transport/tcp_transport.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <cstdlib>
#include <random>
#include <thread>

#include "common/status.h"
#include "transport/mpi_transport.h"

namespace braid {

namespace {

constexpr uint64_t kHeaderMagic = 0xB4A1D00000000000ull;  // top 20 bits of the length word
constexpr uint64_t kLengthMask = (uint64_t{1} << 44) - 1;
constexpr uint32_t kHelloMagic = 0xB4A1D7C9u;
// How long the connections may take to come up, within the op's deadline: a rank that cannot
// reach another fails in seconds, not at the (minutes-long) op timeout.
constexpr auto kConnectWindow = std::chrono::seconds(20);
// Non-blocking attempts before a wait sleeps in poll().
constexpr auto kSpinBeforePoll = std::chrono::microseconds(50);
// Spinning past this with nothing moving yields the core: 4 ranks on 2 cores (the 2x2 test bed)
// took 200 us per 4 KiB all-reduce without, 90 with.
constexpr auto kYieldAfter = std::chrono::microseconds(5);
constexpr int kSocketBufferBytes = 4 << 20;
// Each sendmsg writes at most this much (header included), and the progress loop reads what has
// arrived between writes: both directions of a pair's exchange then flow at once. One large
// write instead kept this rank copying into its socket while the peer's data piled up unread
// (2 namespace hosts, 1 MiB all-reduce: 48 KiB writes 2.6-3.2 GB/s busbw, whole-message writes
// 1.3-1.5, 64 KiB writes 1.0-1.3 and 16 KiB writes 1.6-1.8).
constexpr size_t kMaxWriteBytes = 48 << 10;
// Queued messages gathered into one write at most.
constexpr size_t kMaxPartsPerWrite = 8;

std::string errnoText(int e) { return std::strerror(e); }

struct Interface {
  std::string name;
  std::string address;
  bool loopback;
};

std::vector<Interface> ipv4Interfaces() {
  std::vector<Interface> out;
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return out;
  for (ifaddrs* i = list; i != nullptr; i = i->ifa_next) {
    if (i->ifa_addr == nullptr || i->ifa_addr->sa_family != AF_INET || !(i->ifa_flags & IFF_UP)) continue;
    char text[INET_ADDRSTRLEN] = {};
    inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr, text, sizeof text);
    out.push_back({i->ifa_name, text, (i->ifa_flags & IFF_LOOPBACK) != 0});
  }
  freeifaddrs(list);
  return out;
}

std::vector<std::string> splitList(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= s.size()) {
    size_t comma = s.find(',', start);
    if (comma == std::string::npos) comma = s.size();
    if (comma > start) out.push_back(s.substr(start, comma - start));
    start = comma + 1;
  }
  return out;
}

// NCCL_SOCKET_IFNAME's rules: prefixes, '=' for exact names, a leading '^' to exclude.
bool matches(const std::string& spec, const std::string& name, bool* excluding) {
  std::string list = spec;
  *excluding = !list.empty() && list[0] == '^';
  if (*excluding) list.erase(0, 1);
  bool exact = !list.empty() && list[0] == '=';
  if (exact) list.erase(0, 1);
  for (const auto& item : splitList(list)) {
    if (exact ? name == item : name.compare(0, item.size(), item) == 0) return true;
  }
  return false;
}

void setNonBlocking(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL, 0) | O_NONBLOCK); }

void tune(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  setNonBlocking(fd);
}

// Buffers that hold a whole message of a few hundred KiB, set before the connection is made (on
// the listener, which accepted sockets inherit, and before connect) so that the window scale and
// clamp agreed in the handshake allow them. The kernel caps them at net.core.wmem_max / rmem_max.
void sizeBuffers(int fd) {
  int bytes = kSocketBufferBytes;
  setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof bytes);
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof bytes);
}

// What every rank publishes over MPI before connecting (fixed size, so one MPI_Iallgather).
struct Record {
  int32_t ok;
  uint16_t port;
  char address[INET_ADDRSTRLEN + 2];
  uint64_t token;
  char error[240];
};

struct Hello {
  uint32_t magic;
  int32_t rank;
  int32_t stream;
  int32_t pad;
  uint64_t token;
};

template <typename T>
std::vector<T> allgather(MPI_Comm comm, const T& mine, int size, std::chrono::steady_clock::time_point deadline,
                         const char* what) {
  auto buffers = std::make_shared<std::vector<T>>(static_cast<size_t>(size) + 1);
  (*buffers)[0] = mine;
  MPI_Request request;
  checkMpi(MPI_Iallgather(buffers->data(), sizeof(T), MPI_BYTE, buffers->data() + 1, sizeof(T), MPI_BYTE, comm, &request),
           "MPI_Iallgather (TCP set-up)");
  try {
    waitRequest(request, deadline, what);
  } catch (...) {
    orphanRequests({request}, buffers);
    throw;
  }
  return std::vector<T>(buffers->begin() + 1, buffers->end());
}

void copyText(char* out, size_t capacity, const std::string& text) {
  std::memset(out, 0, capacity);
  std::memcpy(out, text.data(), std::min(text.size(), capacity - 1));
}

}  // namespace

std::string chooseSocketAddress(const TcpOptions& options) {
  if (options.loopback && options.interfaces.empty()) return "127.0.0.1";
  const auto interfaces = ipv4Interfaces();
  std::string seen;
  for (const auto& i : interfaces) seen += (seen.empty() ? "" : ", ") + i.name + " " + i.address;
  if (seen.empty()) seen = "none";
  if (!options.interfaces.empty()) {
    for (const auto& i : interfaces) {
      bool excluding = false;
      const bool hit = matches(options.interfaces, i.name, &excluding);
      if (excluding ? (!hit && !i.loopback) : hit) return i.address;
    }
    throw BraidException(ErrorCode::kBackendUnavailable,
                         "no IPv4 interface that is up matches BRAID_SOCKET_IFNAME='" + options.interfaces +
                             "' (this host has: " + seen + "); name one of those, or set BRAID_TRANSPORT=mpi");
  }
  std::vector<const Interface*> candidates;
  for (const auto& i : interfaces)
    if (!i.loopback) candidates.push_back(&i);
  if (candidates.empty()) {
    throw BraidException(ErrorCode::kBackendUnavailable,
                         "this host has no IPv4 interface up other than loopback (it has: " + seen +
                             "), so ranks on other hosts cannot reach it; set BRAID_TRANSPORT=mpi or BRAID_SOCKET_IFNAME");
  }
  // The interface this host's name resolves to is the one its peers know it by (and the one
  // mpirun reached it through, when hosts are named): prefer it.
  char name[256] = {};
  gethostname(name, sizeof name - 1);
  addrinfo hints{};
  hints.ai_family = AF_INET;
  addrinfo* resolved = nullptr;
  if (getaddrinfo(name, nullptr, &hints, &resolved) == 0) {
    for (addrinfo* a = resolved; a != nullptr; a = a->ai_next) {
      char text[INET_ADDRSTRLEN] = {};
      inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(a->ai_addr)->sin_addr, text, sizeof text);
      for (const auto* c : candidates) {
        if (c->address == text) {
          freeaddrinfo(resolved);
          return c->address;
        }
      }
    }
    freeaddrinfo(resolved);
  }
  return candidates.front()->address;
}

std::unique_ptr<TcpTransport> TcpTransport::create(MPI_Comm comm, const TcpOptions& options,
                                                   const std::vector<std::string>& hosts,
                                                   std::chrono::steady_clock::time_point deadline) {
  std::unique_ptr<TcpTransport> t(new TcpTransport());
  MPI_Comm_rank(comm, &t->rank_);
  MPI_Comm_size(comm, &t->size_);
  t->streams_ = std::max(1, std::min(8, options.streams));
  const int n = t->size_, me = t->rank_, streams = t->streams_;
  auto who = [&](int r) {
    return "rank " + std::to_string(r) + (static_cast<size_t>(r) < hosts.size() ? " (host " + hosts[r] + ")" : "");
  };

  // 1. Listen, and tell everyone where.
  Record mine{};
  int listener = -1;
  try {
    const std::string address = chooseSocketAddress(options);
    listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (listener >= 0) sizeBuffers(listener);
    if (listener < 0) throw BraidException(ErrorCode::kBackendUnavailable, "socket() failed: " + errnoText(errno));
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    inet_pton(AF_INET, address.c_str(), &sa.sin_addr);
    if (bind(listener, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 || listen(listener, n * streams + 8) != 0) {
      throw BraidException(ErrorCode::kBackendUnavailable, "cannot listen on " + address + ": " + errnoText(errno));
    }
    socklen_t length = sizeof sa;
    getsockname(listener, reinterpret_cast<sockaddr*>(&sa), &length);
    setNonBlocking(listener);
    mine.ok = 1;
    mine.port = ntohs(sa.sin_port);
    copyText(mine.address, sizeof mine.address, address);
    std::random_device random;
    mine.token = (uint64_t{random()} << 32) ^ random();
    t->address_ = address + ":" + std::to_string(mine.port);
  } catch (const BraidException& e) {
    mine.ok = 0;
    copyText(mine.error, sizeof mine.error, e.what());
  }
  struct Closer {
    int& fd;
    ~Closer() {
      if (fd >= 0) close(fd);
    }
  } closeListener{listener};
  const auto records = allgather(comm, mine, n, deadline, "every rank's TCP address (TCP transport set-up)");
  for (int r = 0; r < n; ++r) {
    if (!records[r].ok) {
      throw BraidException(ErrorCode::kBackendUnavailable,
                           "the TCP transport cannot start on " + who(r) + ": " + std::string(records[r].error));
    }
  }

  // 2. Connect: each rank connects to every rank below it and accepts from every rank above.
  t->streams_by_peer_.resize(static_cast<size_t>(n) * streams);
  for (int p = 0; p < n; ++p)
    for (int s = 0; s < streams; ++s) t->stream(p, s).peer = p;
  std::string failure;
  const auto connectDeadline = std::min(deadline, std::chrono::steady_clock::now() + kConnectWindow);
  struct Outgoing {
    int peer, stream, fd = -1;
    bool done = false;
    std::chrono::steady_clock::time_point retryAt{};
  };
  struct Incoming {
    int fd;
    Hello hello{};
    size_t got = 0;
  };
  std::vector<Outgoing> outgoing;
  for (int p = 0; p < me; ++p)
    for (int s = 0; s < streams; ++s) outgoing.push_back({p, s});
  std::vector<Incoming> incoming;
  int expected = (n - 1 - me) * streams;
  int accepted = 0;
  auto startConnect = [&](Outgoing& o) {
    o.fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    sizeBuffers(o.fd);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(records[o.peer].port);
    inet_pton(AF_INET, records[o.peer].address, &sa.sin_addr);
    if (connect(o.fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 && errno != EINPROGRESS) {
      const int e = errno;
      close(o.fd);
      o.fd = -1;
      if (e == ECONNREFUSED) {
        o.retryAt = std::chrono::steady_clock::now() + std::chrono::milliseconds(20);
      } else {
        failure = who(me) + " cannot connect to " + who(o.peer) + " at " + records[o.peer].address + ":" +
                  std::to_string(records[o.peer].port) + ": " + errnoText(e);
      }
    }
  };
  for (auto& o : outgoing) startConnect(o);
  std::vector<pollfd> fds;
  while (failure.empty()) {
    const bool outDone = std::all_of(outgoing.begin(), outgoing.end(), [](const Outgoing& o) { return o.done; });
    if (outDone && accepted == expected) break;
    const auto now = std::chrono::steady_clock::now();
    if (now > connectDeadline) {
      for (const auto& o : outgoing) {
        if (!o.done) {
          failure = who(me) + " could not connect to " + who(o.peer) + " at " + records[o.peer].address + ":" +
                    std::to_string(records[o.peer].port) + " within " +
                    std::to_string(std::chrono::duration_cast<std::chrono::seconds>(kConnectWindow).count()) +
                    " s (a firewall, or an address the hosts cannot reach each other on)";
          break;
        }
      }
      if (failure.empty()) failure = who(me) + " did not hear from every rank above it within the connection window";
      break;
    }
    fds.clear();
    fds.push_back({listener, POLLIN, 0});
    for (auto& o : outgoing) {
      if (o.done) continue;
      if (o.fd < 0) {
        if (now >= o.retryAt) startConnect(o);
        if (!failure.empty()) break;
        continue;
      }
      fds.push_back({o.fd, POLLOUT, 0});
    }
    for (auto& i : incoming) fds.push_back({i.fd, POLLIN, 0});
    poll(fds.data(), fds.size(), 10);
    // New connections.
    for (;;) {
      int fd = accept4(listener, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (fd < 0) break;
      incoming.push_back({fd});
    }
    // Finished connects: say who we are.
    for (auto& o : outgoing) {
      if (o.done || o.fd < 0) continue;
      pollfd check{o.fd, POLLOUT, 0};
      if (poll(&check, 1, 0) <= 0) continue;
      int error = 0;
      socklen_t length = sizeof error;
      getsockopt(o.fd, SOL_SOCKET, SO_ERROR, &error, &length);
      if (error == ECONNREFUSED) {
        close(o.fd);
        o.fd = -1;
        o.retryAt = std::chrono::steady_clock::now() + std::chrono::milliseconds(20);
        continue;
      }
      if (error != 0) {
        failure = who(me) + " cannot connect to " + who(o.peer) + " at " + records[o.peer].address + ":" +
                  std::to_string(records[o.peer].port) + ": " + errnoText(error);
        break;
      }
      Hello hello{kHelloMagic, me, o.stream, 0, records[o.peer].token};
      if (::send(o.fd, &hello, sizeof hello, MSG_NOSIGNAL) != static_cast<ssize_t>(sizeof hello)) {
        failure = who(me) + " could not greet " + who(o.peer) + ": " + errnoText(errno);
        break;
      }
      tune(o.fd);
      t->stream(o.peer, o.stream).fd = o.fd;
      o.done = true;
    }
    // Greetings from the ranks above; anything else that connected is dropped.
    for (auto it = incoming.begin(); it != incoming.end();) {
      ssize_t got = ::recv(it->fd, reinterpret_cast<char*>(&it->hello) + it->got, sizeof(Hello) - it->got, MSG_DONTWAIT);
      if (got > 0) it->got += static_cast<size_t>(got);
      const bool closed = got == 0 || (got < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
      if (it->got == sizeof(Hello)) {
        const Hello& h = it->hello;
        const bool valid = h.magic == kHelloMagic && h.token == mine.token && h.rank > me && h.rank < n && h.stream >= 0 &&
                           h.stream < streams && t->stream(h.rank, h.stream).fd < 0;
        if (valid) {
          tune(it->fd);
          t->stream(h.rank, h.stream).fd = it->fd;
          ++accepted;
        } else {
          close(it->fd);
        }
        it = incoming.erase(it);
      } else if (closed) {
        close(it->fd);
        it = incoming.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (auto& o : outgoing)
    if (!o.done && o.fd >= 0) close(o.fd);
  for (auto& i : incoming) close(i.fd);

  // 3. Every rank learns every rank's outcome, so all fail alike.
  struct Outcome {
    int32_t ok;
    char error[400];
  };
  Outcome outcome{failure.empty() ? 1 : 0, {}};
  copyText(outcome.error, sizeof outcome.error, failure);
  const auto outcomes = allgather(comm, outcome, n, deadline, "every rank's TCP connection outcome");
  for (int r = 0; r < n; ++r) {
    if (!outcomes[r].ok) {
      throw BraidException(ErrorCode::kBackendUnavailable,
                           "the TCP transport could not connect the ranks: " + std::string(outcomes[r].error) +
                               ". Set BRAID_SOCKET_IFNAME to an interface the hosts reach each other on, or "
                               "BRAID_TRANSPORT=mpi to send data through MPI");
    }
  }
  return t;
}

TcpTransport::~TcpTransport() {
  for (auto& s : streams_by_peer_)
    if (s.fd >= 0) close(s.fd);
}

RequestId TcpTransport::allocate(int peer, bool send) {
  RequestId id;
  if (!freeList_.empty()) {
    id = freeList_.back();
    freeList_.pop_back();
  } else {
    id = static_cast<RequestId>(requests_.size());
    requests_.emplace_back();
  }
  requests_[id] = Request{0, peer, send, true};
  return id;
}

RequestId TcpTransport::post(int peer, bool send, uint8_t* data, size_t bytes) {
  if (!broken_.empty()) throw BraidException(ErrorCode::kAborted, broken_);
  if (peer < 0 || peer >= size_ || peer == rank_) {
    throw BraidException(ErrorCode::kInternal, "TCP transport: no connection to rank " + std::to_string(peer));
  }
  const RequestId id = allocate(peer, send);
  // Both ends cut a message alike: they know its length.
  const int stripes = streams_ > 1 && bytes >= 2 * kStripeMinBytes
                          ? static_cast<int>(std::min<size_t>(streams_, bytes / kStripeMinBytes))
                          : 1;
  const size_t stripe = (bytes / stripes + 63) & ~size_t{63};
  size_t offset = 0;
  for (int s = 0; s < stripes; ++s) {
    const size_t length = s == stripes - 1 ? bytes - offset : std::min(stripe, bytes - offset);
    Stream& st = stream(peer, s);
    Part part{id, data + offset, length, 0, {}};
    const uint64_t word = kHeaderMagic | length;
    const uint64_t seq = send ? st.sent++ : st.received++;
    std::memcpy(part.header, &word, 8);
    std::memcpy(part.header + 8, &seq, 8);
    const bool idle = st.sends.empty() && st.recvs.empty();
    (send ? st.sends : st.recvs).push_back(part);
    if (idle) active_.push_back(static_cast<int>(&st - streams_by_peer_.data()));
    ++requests_[id].parts;
    offset += length;
  }
  return id;
}

RequestId TcpTransport::isend(int peer, const void* data, size_t bytes) {
  return post(peer, true, const_cast<uint8_t*>(static_cast<const uint8_t*>(data)), bytes);
}

RequestId TcpTransport::irecv(int peer, void* data, size_t bytes) {
  return post(peer, false, static_cast<uint8_t*>(data), bytes);
}

void TcpTransport::fail(const Stream& stream, const std::string& why) {
  broken_ = "the connection to " + who(stream.peer) + " " + why;
  throw BraidException(ErrorCode::kAborted, broken_);
}

bool TcpTransport::progress(Stream& st) {
  bool moved = false;
  while (!st.sends.empty()) {
    // The messages queued on this stream go out together, up to a write's worth: a descriptor
    // and the buffer behind it (negotiation.h) leave in one segment. Two writes cost the
    // receiver a second wake-up (2 namespace hosts: 8.9 us per 4-byte direct all-reduce, 2
    // sendmsg calls; one: see benchmarks/README.md).
    iovec iov[kMaxPartsPerWrite * 2];
    int count = 0;
    size_t room = kMaxWriteBytes;
    for (size_t i = 0; i < st.sends.size() && i < kMaxPartsPerWrite && room > 0; ++i) {
      Part& p = st.sends[i];
      if (p.done < 16) {
        const size_t h = std::min(16 - p.done, room);
        iov[count++] = {p.header + p.done, h};
        room -= h;
      }
      const size_t dataDone = p.done > 16 ? p.done - 16 : 0;
      if (p.bytes > dataDone && room > 0) {
        const size_t d = std::min(room, p.bytes - dataDone);
        iov[count++] = {p.data + dataDone, d};
        room -= d;
      }
    }
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = count;
    const ssize_t n = sendmsg(st.fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      if (errno == EINTR) continue;
      fail(st, "failed while sending (" + errnoText(errno) + "): that process ended or its host is unreachable");
    }
    moved = true;
    size_t written = static_cast<size_t>(n);
    bool partial = false;
    while (written > 0) {
      Part& p = st.sends.front();
      const size_t take = std::min(written, 16 + p.bytes - p.done);
      p.done += take;
      written -= take;
      if (p.done < 16 + p.bytes) {
        partial = true;
        break;
      }
      --requests_[p.request].parts;
      st.sends.pop_front();
    }
    if (partial || room == 0) break;  // a write's worth went (or the socket is full): read first
  }
  while (!st.recvs.empty()) {
    Part& p = st.recvs.front();
    iovec iov[2];
    int count = 0;
    uint8_t header[16];
    if (p.done < 16) iov[count++] = {header + p.done, 16 - p.done};
    const size_t dataDone = p.done > 16 ? p.done - 16 : 0;
    if (p.bytes > dataDone) iov[count++] = {p.data + dataDone, p.bytes - dataDone};
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = count;
    const ssize_t n = recvmsg(st.fd, &msg, MSG_DONTWAIT);
    if (n == 0) fail(st, "was closed by that rank: its process ended or failed");
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      if (errno == EINTR) continue;
      fail(st, "failed while receiving (" + errnoText(errno) + "): that process ended or its host is unreachable");
    }
    moved = true;
    const size_t before = p.done;
    if (before < 16) {
      // The expected header is in p.header; what arrived goes beside it for the check.
      const size_t headerBytes = std::min<size_t>(16 - before, static_cast<size_t>(n));
      if (std::memcmp(header + before, p.header + before, headerBytes) != 0) {
        uint64_t word = 0, seq = 0, wantSeq = 0;
        std::memcpy(reinterpret_cast<uint8_t*>(&word), header, std::min<size_t>(8, before + headerBytes));
        std::memcpy(&seq, header + 8, 8);
        std::memcpy(&wantSeq, p.header + 8, 8);
        throw BraidException(ErrorCode::kCorruptPayload,
                             (broken_ = "the stream from " + who(st.peer) + " is out of step: expected message #" +
                                        std::to_string(wantSeq) + " of " + std::to_string(p.bytes) + " bytes, got a header for " +
                                        std::to_string(word & kLengthMask) +
                                        " bytes (the ranks ran different operations; keep the agreement step on)"));
      }
    }
    p.done += static_cast<size_t>(n);
    if (p.done < 16 + p.bytes) break;  // nothing more there yet
    --requests_[p.request].parts;
    st.recvs.pop_front();
  }
  return moved;
}

bool TcpTransport::progressAll() {
  bool moved = false;
  for (size_t i = 0; i < active_.size();) {
    Stream& st = streams_by_peer_[active_[i]];
    moved |= progress(st);
    if (st.sends.empty() && st.recvs.empty()) {
      active_[i] = active_.back();
      active_.pop_back();
    } else {
      ++i;
    }
  }
  return moved;
}

void TcpTransport::wait(RequestId id) {
  if (id < 0 || static_cast<size_t>(id) >= requests_.size() || !requests_[id].live) {
    throw BraidException(ErrorCode::kInternal, "TCP transport: wait on an unknown request");
  }
  if (!broken_.empty()) throw BraidException(ErrorCode::kAborted, broken_);
  Request& request = requests_[id];
  // Spin while bytes move (a wake-up from poll() costs tens of microseconds on a busy host, and a
  // transfer that outlasts one spin window would pay it again each time the socket drains); sleep
  // only once nothing has moved for kSpinBeforePoll.
  auto lastMoved = std::chrono::steady_clock::now();
  for (;;) {
    const bool moved = progressAll();
    if (request.parts == 0) break;
    const auto now = std::chrono::steady_clock::now();
    if (moved) lastMoved = now;
    if (now - lastMoved < kSpinBeforePoll) {
      // Nothing for a while: let a thread waiting for this core run (where ranks outnumber cores,
      // that is often the peer this wait is for). Not at every pause in a flowing transfer.
      if (now - lastMoved > kYieldAfter) std::this_thread::yield();
      continue;
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline_ - now).count();
    idle(std::chrono::milliseconds(std::max<long long>(1, std::min<long long>(100, left))));
    checkSlowWait(std::chrono::steady_clock::now(), lastMoved,
                  std::string(request.send ? "a send to " : "a receive from ") + who(request.peer));
  }
  request.live = false;
  freeList_.push_back(id);
}

bool TcpTransport::test(RequestId id) {
  if (id < 0 || static_cast<size_t>(id) >= requests_.size() || !requests_[id].live) {
    throw BraidException(ErrorCode::kInternal, "TCP transport: test on an unknown request");
  }
  if (!broken_.empty()) throw BraidException(ErrorCode::kAborted, broken_);
  if (progressAll()) lastMoved_ = std::chrono::steady_clock::now();
  if (requests_[id].parts != 0) return false;
  requests_[id].live = false;
  freeList_.push_back(id);
  return true;
}

void TcpTransport::idle(std::chrono::milliseconds most) {
  std::vector<pollfd>& fds = pollSet_;
  fds.clear();
  for (int index : active_) {
    const Stream& st = streams_by_peer_[index];
    fds.push_back({st.fd, static_cast<short>((st.recvs.empty() ? 0 : POLLIN) | (st.sends.empty() ? 0 : POLLOUT)), 0});
  }
  if (fds.empty()) return;
  poll(fds.data(), fds.size(), static_cast<int>(std::max<long long>(0, most.count())));
}

void TcpTransport::nativeAllreduce(void*, size_t, DType, RedOp) {
  throw BraidException(ErrorCode::kBackendUnavailable, "the TCP transport has no library all-reduce; 'mpi' runs on MPI");
}

size_t TcpTransport::abandon(std::shared_ptr<void>) {
  bool posted = !active_.empty();
  for (auto& r : requests_) posted |= r.live;
  if (!posted) return 0;  // nothing in flight: the streams are still in step
  for (auto& s : streams_by_peer_) {
    s.sends.clear();
    s.recvs.clear();
  }
  active_.clear();
  freeList_.clear();
  requests_.clear();
  outOfStep_ = true;
  if (broken_.empty()) broken_ = "an earlier operation failed with data in flight on the TCP connections";
  return 0;
}

void TcpTransport::closeConnections() {
  if (!outOfStep_) return;
  for (auto& s : streams_by_peer_) {
    if (s.fd >= 0) close(s.fd);
    s.fd = -1;
  }
}

}  // namespace braid
