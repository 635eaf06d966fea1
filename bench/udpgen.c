/* udpgen: a cheap fixed-rate UDP DNS load generator that records every query's latency.
 *
 * bench/workers.py axfr-load compiles it (gcc -O2, into a temporary directory) and runs it in
 * place of dnsperf: dnsperf -v, or a Python generator, costs most of a core at 10k QPS, which
 * on a 2-core machine is taken from the very server being measured.  This one sleeps between
 * sends and reads replies with their kernel receive time (SO_TIMESTAMPNS), so a reply that
 * waited in the socket while the generator itself was off the CPU is not counted as server
 * latency.
 *
 *   udpgen HOST PORT QUERIES RATE SECONDS SOCKETS TIMEOUT OUT
 *
 * QUERIES holds dnsperf-style lines ("name type"); they are sent in order, cycling, at RATE
 * per second for SECONDS, round-robin over SOCKETS sockets (each its own source port, so
 * SO_REUSEPORT spreads them over the server's workers; what falls due within a millisecond
 * goes out in one burst, as dnsperf's do).  A query without a reply TIMEOUT
 * seconds after it was sent is lost.  OUT receives, per query in send order, two int32:
 * latency in microseconds (-1: lost) and how late it was sent against the fixed schedule in
 * microseconds (the generator's own stalls).  The first line on stdout is
 * "start <CLOCK_MONOTONIC seconds>", flushed as sending begins, so the caller can time events
 * against the schedule; a summary line follows at the end.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAXQ 512
#define MAXSOCK 64
#define TICK 0.001 /* seconds between wake-ups */

struct query { unsigned char wire[MAXQ]; int len; };

static double now_mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int qtype_of(const char *t) {
    static const struct { const char *name; int code; } types[] = {
        {"A", 1}, {"NS", 2}, {"CNAME", 5}, {"SOA", 6}, {"PTR", 12}, {"MX", 15}, {"TXT", 16},
        {"AAAA", 28}, {"SRV", 33}, {"DS", 43}, {"RRSIG", 46}, {"NSEC", 47}, {"DNSKEY", 48},
        {"NSEC3", 50}, {"ANY", 255}};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        if (strcasecmp(t, types[i].name) == 0) return types[i].code;
    if (strncasecmp(t, "TYPE", 4) == 0) return atoi(t + 4);
    return -1;
}

/* One query in wire form, ID left 0 (set per send); -1 when the line is not "name type". */
static int encode(const char *line, struct query *q) {
    char name[300], type[32];
    if (sscanf(line, "%299s %31s", name, type) != 2) return -1;
    int qtype = qtype_of(type);
    if (qtype < 0) return -1;
    unsigned char *p = q->wire;
    memset(p, 0, 12);
    p[5] = 1; /* QDCOUNT 1, RD clear: an authoritative server's query */
    int pos = 12;
    const char *label = name;
    while (*label && !(label[0] == '.' && label[1] == 0)) {
        const char *dot = strchr(label, '.');
        int n = dot ? (int)(dot - label) : (int)strlen(label);
        if (n == 0 || n > 63 || pos + n + 6 >= MAXQ) return -1;
        p[pos++] = (unsigned char)n;
        memcpy(p + pos, label, n);
        pos += n;
        label += n + (dot ? 1 : 0);
        if (!dot) break;
    }
    p[pos++] = 0;
    p[pos++] = qtype >> 8; p[pos++] = qtype & 255;
    p[pos++] = 0; p[pos++] = 1; /* class IN */
    q->len = pos;
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 9) {
        fprintf(stderr, "usage: udpgen HOST PORT QUERIES RATE SECONDS SOCKETS TIMEOUT OUT\n");
        return 2;
    }
    const char *host = argv[1];
    int port = atoi(argv[2]);
    double rate = atof(argv[4]), seconds = atof(argv[5]), timeout = atof(argv[7]);
    int nsock = atoi(argv[6]);
    if (rate <= 0 || seconds <= 0 || nsock < 1 || nsock > MAXSOCK || timeout <= 0) {
        fprintf(stderr, "udpgen: bad RATE, SECONDS, SOCKETS or TIMEOUT\n");
        return 2;
    }
    FILE *qf = fopen(argv[3], "r");
    if (!qf) { perror(argv[3]); return 2; }
    size_t nq = 0, cap = 1024;
    struct query *queries = malloc(cap * sizeof *queries);
    char line[512];
    while (fgets(line, sizeof line, qf)) {
        if (nq == cap) { cap *= 2; queries = realloc(queries, cap * sizeof *queries); }
        if (encode(line, &queries[nq]) == 0) nq++;
    }
    fclose(qf);
    if (nq == 0) { fprintf(stderr, "udpgen: no queries in %s\n", argv[3]); return 2; }

    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (inet_pton(AF_INET, host, &to.sin_addr) != 1) { fprintf(stderr, "udpgen: bad HOST\n"); return 2; }
    int socks[MAXSOCK];
    struct pollfd pfd[MAXSOCK];
    for (int s = 0; s < nsock; s++) {
        socks[s] = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
        int on = 1, buf = 4 << 20;
        setsockopt(socks[s], SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof on);
        setsockopt(socks[s], SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
        if (connect(socks[s], (struct sockaddr *)&to, sizeof to) != 0) { perror("connect"); return 2; }
        pfd[s].fd = socks[s];
        pfd[s].events = POLLIN;
    }

    size_t total = (size_t)(rate * seconds);
    double *sent_at = calloc(total, sizeof *sent_at);
    int32_t *out = malloc(total * 2 * sizeof *out);
    /* in flight: per socket, query ID -> query index + 1 (IDs cycle every 65536 sends on one
     * socket, far longer than TIMEOUT at any rate this is meant for). */
    uint32_t (*flight)[65536] = calloc(nsock, sizeof *flight);
    for (size_t i = 0; i < total; i++) { out[2 * i] = -1; out[2 * i + 1] = 0; }

    double start = now_mono();
    printf("start %.6f\n", start);
    fflush(stdout);
    size_t next = 0, answered = 0, stray = 0;
    double end = start + seconds + timeout;
    unsigned char rbuf[4096];
    char cbuf[256];
    for (;;) {
        double now = now_mono();
        while (next < total && start + next / rate <= now) {
            int s = (int)(next % nsock);
            uint16_t id = (uint16_t)((next / nsock) & 0xFFFF);
            struct query *q = &queries[next % nq];
            q->wire[0] = id >> 8; q->wire[1] = id & 255;
            sent_at[next] = now_mono();
            out[2 * next + 1] = (int32_t)((sent_at[next] - (start + next / rate)) * 1e6);
            flight[s][id] = (uint32_t)(next + 1);
            if (send(socks[s], q->wire, q->len, 0) < 0 && errno != EAGAIN) { perror("send"); return 1; }
            next++;
            now = now_mono();
        }
        if (now >= end || (next == total && answered >= total)) break;
        /* Wake at most once per TICK: what is due is sent in a burst, and replies are read
         * then, by their kernel receive times, so reading them late costs no accuracy.  One
         * wake-up per query and per reply cost ~40% of a core at 10k QPS on a VM. */
        double wake = next < total ? start + next / rate : end;
        if (wake < now + TICK) wake = now + TICK;
        struct timespec ts = {(time_t)wake, (long)((wake - (time_t)wake) * 1e9)};
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
        struct timespec zero = {0, 0};
        if (ppoll(pfd, nsock, &zero, NULL) <= 0) continue;
        for (int s = 0; s < nsock; s++) {
            if (!(pfd[s].revents & POLLIN)) continue;
            for (;;) {
                struct iovec iov = {rbuf, sizeof rbuf};
                struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
                                     .msg_controllen = sizeof cbuf};
                ssize_t n = recvmsg(socks[s], &msg, 0);
                if (n < 0) break;
                if (n < 12 || !(rbuf[2] & 0x80)) continue;
                double when = now_mono();
                for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
                    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS) {
                        /* The kernel's receive time is CLOCK_REALTIME: bring it to the
                         * monotonic clock through the offset between the two right now. */
                        struct timespec rt, mono, got;
                        memcpy(&got, CMSG_DATA(c), sizeof got);
                        clock_gettime(CLOCK_REALTIME, &rt);
                        clock_gettime(CLOCK_MONOTONIC, &mono);
                        when = (got.tv_sec - rt.tv_sec) + (got.tv_nsec - rt.tv_nsec) / 1e9
                               + mono.tv_sec + mono.tv_nsec / 1e9;
                    }
                }
                uint16_t id = (uint16_t)(rbuf[0] << 8 | rbuf[1]);
                uint32_t idx = flight[s][id];
                if (idx == 0) { stray++; continue; }
                flight[s][id] = 0;
                idx--;
                double lat = when - sent_at[idx];
                if (lat > timeout) continue; /* too late: stays lost */
                out[2 * idx] = (int32_t)(lat * 1e6 < 0 ? 0 : lat * 1e6);
                answered++;
            }
        }
    }
    FILE *of = fopen(argv[8], "wb");
    if (!of || fwrite(out, sizeof *out, total * 2, of) != total * 2 || fclose(of) != 0) {
        perror(argv[8]);
        return 1;
    }
    printf("sent %zu answered %zu lost %zu stray %zu\n", next, answered, next - answered, stray);
    return 0;
}
