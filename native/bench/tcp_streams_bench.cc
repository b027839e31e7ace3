// The peer that the multi-host benchmark measures Braid against: plain TCP streams between two
// ranks on two hosts, with nothing but large writes and reads. Run with one rank per host:
//   mpirun -np 2 -H a:1,b:1 braid_tcp_streams_bench [--seconds 2] [--json out.json]
// Prints (rank 0) the round trip of an 8-byte ping-pong (TCP_NODELAY, receives polled), the rate of one stream
// from rank 0 to rank 1, then of two opposite streams at once (each way). MPI only exchanges the
// addresses and lines the ranks up.
#include <arpa/inet.h>
#include <mpi.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "transport/tcp_transport.h"

using namespace braid;

namespace {

constexpr size_t kWriteBytes = 4 << 20;

struct Address {
  char host[64];
  uint16_t port;
};

int connectTo(const Address& to) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(to.port);
  inet_pton(AF_INET, to.host, &sa.sin_addr);
  if (connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    std::perror("connect");
    std::exit(1);
  }
  return fd;
}

double sendFor(const Address& to, double seconds, size_t writeBytes) {
  int fd = connectTo(to);
  std::vector<char> data(writeBytes, 7);
  const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  double sent = 0;
  while (std::chrono::steady_clock::now() < until) {
    ssize_t n = ::send(fd, data.data(), data.size(), 0);
    if (n <= 0) break;
    sent += static_cast<double>(n);
  }
  close(fd);
  return sent;
}

// Bytes per second received on one accepted connection, from its first byte to its end.
double receiveOne(int listener) {
  int fd = accept(listener, nullptr, nullptr);
  std::vector<char> data(kWriteBytes);
  double got = 0;
  std::chrono::steady_clock::time_point first{};
  for (;;) {
    ssize_t n = ::recv(fd, data.data(), data.size(), 0);
    if (n <= 0) break;
    if (got == 0) first = std::chrono::steady_clock::now();
    got += static_cast<double>(n);
  }
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - first).count();
  close(fd);
  return elapsed > 0 ? got / elapsed : 0;
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  double seconds = 2;
  const char* json = nullptr;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--seconds") == 0) seconds = std::atof(argv[i + 1]);
    if (std::strcmp(argv[i], "--json") == 0) json = argv[i + 1];
  }
  if (size != 2) {
    if (rank == 0) std::fprintf(stderr, "braid_tcp_streams_bench: run it with 2 ranks, one per host\n");
    MPI_Finalize();
    return 2;
  }
  TcpOptions options;
  options.interfaces = std::getenv("BRAID_SOCKET_IFNAME") ? std::getenv("BRAID_SOCKET_IFNAME") : "";
  Address mine{};
  const std::string host = chooseSocketAddress(options);
  std::snprintf(mine.host, sizeof mine.host, "%s", host.c_str());
  int listener = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  inet_pton(AF_INET, mine.host, &sa.sin_addr);
  bind(listener, reinterpret_cast<sockaddr*>(&sa), sizeof sa);
  listen(listener, 4);
  socklen_t length = sizeof sa;
  getsockname(listener, reinterpret_cast<sockaddr*>(&sa), &length);
  mine.port = ntohs(sa.sin_port);
  Address all[2];
  MPI_Allgather(&mine, sizeof mine, MPI_BYTE, all, sizeof mine, MPI_BYTE, MPI_COMM_WORLD);
  const Address& peer = all[1 - rank];

  // Ping-pong: the round trip between the hosts (half of it is the one-way latency).
  double rttUs = 0;
  {
    MPI_Barrier(MPI_COMM_WORLD);
    int fd;
    if (rank == 0) {
      fd = connectTo(peer);
    } else {
      fd = accept(listener, nullptr, nullptr);
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    char byte[8] = {};
    const int warm = 500, timed = 5000;
    std::chrono::steady_clock::time_point start;
    for (int i = 0; i < warm + timed; ++i) {
      if (i == warm) start = std::chrono::steady_clock::now();
      // Polling, not sleeping in recv: the network's latency, not the scheduler's wake-up.
      auto receive = [&] {
        size_t got = 0;
        while (got < sizeof byte) {
          ssize_t n = ::recv(fd, byte + got, sizeof byte - got, MSG_DONTWAIT);
          if (n > 0) got += static_cast<size_t>(n);
        }
      };
      if (rank == 0) {
        ::send(fd, byte, sizeof byte, 0);
        receive();
      } else {
        receive();
        ::send(fd, byte, sizeof byte, 0);
      }
    }
    rttUs = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count() / timed;
    close(fd);
  }

  // One stream, rank 0 to rank 1, then two opposite streams at once, each with large writes (4 MiB)
  // and with 48 KiB writes (what Braid's transport writes at a time); the faster counts.
  double oneWay = 0, rates[2] = {0, 0};
  for (size_t writeBytes : {kWriteBytes, size_t{48} << 10}) {
    double once = 0;
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0) {
      sendFor(peer, seconds, writeBytes);
    } else {
      once = receiveOne(listener);
    }
    MPI_Bcast(&once, 1, MPI_DOUBLE, 1, MPI_COMM_WORLD);
    oneWay = std::max(oneWay, once);
    MPI_Barrier(MPI_COMM_WORLD);
    double received = 0;
    std::thread receiver([&] { received = receiveOne(listener); });
    sendFor(peer, seconds, writeBytes);
    receiver.join();
    double both[2];
    MPI_Gather(&received, 1, MPI_DOUBLE, both, 1, MPI_DOUBLE, 0, MPI_COMM_WORLD);
    if (rank == 0 && std::min(both[0], both[1]) > std::min(rates[0], rates[1])) {
      rates[0] = both[0];
      rates[1] = both[1];
    }
  }
  if (rank == 0) {
    const double each = std::min(rates[0], rates[1]);
    std::printf("# plain TCP between %s and %s: round trip %.1f us; one stream %.3f GB/s; two opposite streams %.3f and %.3f GB/s (each way)\n",
                all[0].host, all[1].host, rttUs, oneWay / 1e9, rates[0] / 1e9, rates[1] / 1e9);
    if (json != nullptr) {
      FILE* f = std::fopen(json, "w");
      std::fprintf(f, "{\"roundTripUs\": %.2f, \"oneStreamBytesPerSecond\": %.0f, \"oppositeStreamsBytesPerSecond\": [%.0f, %.0f], \"perDirectionBytesPerSecond\": %.0f}\n",
                   rttUs, oneWay, rates[0], rates[1], each);
      std::fclose(f);
    }
  }
  close(listener);
  MPI_Finalize();
  return 0;
}
