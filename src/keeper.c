/* The keeper, and a server's start under it (keeper.h). */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/fuse.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <fuse_lowlevel.h>

#include "journal.h"
#include "keeper.h"
#include "log.h"

/* Linux 6.9 (protocol 7.40): not in every uapi header yet. */
#define NOTIFY_RESEND 7
#define INIT_HAS_RESEND_FLAGS2 (1U << 7) /* FUSE_HAS_RESEND, bit 39 of the INIT flags */

#define ENV_SOCK "OCIFS_KEEPER"

enum { F_TAKEOVER = 1, F_DEAD = 2 };

struct kmsg {
	char type;
	char pad[3];
	uint32_t flags;
	uint32_t restarts;
	int32_t pid; /* the keeper's */
	uint32_t gen; /* 'F': the generation of the server's ids (journal.h) */
};

static int send_gen(int sock, char type, uint32_t flags, uint32_t restarts, uint32_t gen,
	const int *fds, int nfd)
{
	struct kmsg m = {
		.type = type, .flags = flags, .restarts = restarts, .pid = getpid(), .gen = gen
	};
	struct iovec iov = { &m, sizeof(m) };
	char ctl[CMSG_SPACE(2 * sizeof(int))];
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };

	memset(ctl, 0, sizeof(ctl));
	if (nfd > 0) {
		struct cmsghdr *c;

		mh.msg_control = ctl;
		mh.msg_controllen = CMSG_SPACE((size_t)nfd * sizeof(int));
		c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN((size_t)nfd * sizeof(int));
		memcpy(CMSG_DATA(c), fds, (size_t)nfd * sizeof(int));
	}
	while (sendmsg(sock, &mh, MSG_NOSIGNAL) < 0)
		if (errno != EINTR)
			return -errno;
	return 0;
}

/* One message; fds[] gets what came with it (-1 for none). 0, -EPIPE at the end, or -errno. */
static int recv_msg(int sock, struct kmsg *m, int fds[2])
{
	char ctl[CMSG_SPACE(2 * sizeof(int))];
	struct iovec iov = { m, sizeof(*m) };
	struct msghdr mh = {
		.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof(ctl)
	};
	struct cmsghdr *c;
	ssize_t n;

	fds[0] = fds[1] = -1;
	do
		n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	if (n == 0)
		return -EPIPE;
	for (c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
			size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);

			memcpy(fds, CMSG_DATA(c), (k > 2 ? 2 : k) * sizeof(int));
		}
	return n == sizeof(*m) ? 0 : -EPROTO;
}

static int send_msg(int sock, char type, uint32_t flags, uint32_t restarts, const int *fds, int nfd)
{
	return send_gen(sock, type, flags, restarts, 0, fds, nfd);
}

/* "\040" and the like in a mount point of /proc/self/mountinfo, in place */
static void unescape_octal(char *s)
{
	char *d = s;

	for (; *s; s++) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' &&
			s[3] >= '0' && s[3] <= '7') {
			*d++ = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0'));
			s += 3;
		} else {
			*d++ = *s;
		}
	}
	*d = '\0';
}

int keeper_mount_device(const char *path, char *dev, size_t cap)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	char *line = NULL;
	size_t lcap = 0;

	if (!f)
		return -errno;
	dev[0] = '\0';
	while (getline(&line, &lcap, f) > 0) {
		char d[32], mp[PATH_MAX];

		if (sscanf(line, "%*u %*u %31s %*s %4095s", d, mp) != 2)
			continue;
		unescape_octal(mp);
		if (strcmp(mp, path) == 0)
			snprintf(dev, cap, "%s", d); /* the last is the newest */
	}
	free(line);
	fclose(f);
	return dev[0] ? 0 : -ENOENT;
}

/* stdio to /dev/null: a process in the background logs to syslog. */
static void detach_stdio(void)
{
	int fd = open("/dev/null", O_RDWR);

	if (fd < 0)
		return;
	dup2(fd, 0);
	dup2(fd, 1);
	dup2(fd, 2);
	if (fd > 2)
		close(fd);
}

/* ------------------------------------------------------------------ server */

static struct {
	struct fuse_session *se;
	int sock;
	int fuse_fd;
	pid_t keeper;
	unsigned restarts;
	pthread_t thread;
	bool thread_started;
	/* INIT: the request's unique, to tell the keeper once it is answered */
	uint64_t init_unique;
	bool init_seen, init_said;
	bool replaying; /* the INIT is being replayed: its reply is dropped */
	bool has_resend; /* the kernel said FUSE_HAS_RESEND in its INIT */
	/* Protects: yielding, released, and the threads in read(). */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool yielding, released;
	bool detaching; /* the loop has ended: the socket's end is not the keeper's (atomic) */
	bool alone; /* no earlier server runs any more (under lock) */
	pid_t in_read[64];
	unsigned n_in_read;
	unsigned n_out; /* threads out of io_read with a request they read */
	pthread_key_t out_key; /* set in such a thread */
} srv = { .sock = -1,
	.fuse_fd = -1,
	.lock = PTHREAD_MUTEX_INITIALIZER,
	.cond = PTHREAD_COND_INITIALIZER };

int keeper_server_sock(unsigned *restarts)
{
	const char *e = getenv(ENV_SOCK);
	unsigned fd, r;

	*restarts = 0;
	if (!e || sscanf(e, "%u:%u", &fd, &r) != 2 || fcntl((int)fd, F_GETFD) < 0)
		return -1;
	unsetenv(ENV_SOCK);
	fcntl((int)fd, F_SETFD, FD_CLOEXEC);
	*restarts = r;
	return (int)fd;
}

static void in_read_del(pid_t tid)
{
	unsigned i;

	for (i = 0; i < srv.n_in_read; i++)
		if (srv.in_read[i] == tid) {
			srv.in_read[i] = srv.in_read[--srv.n_in_read];
			return;
		}
}

/* A worker that ends (libfuse ends idle ones) with its request answered. */
static void out_ended(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&srv.lock);
	srv.n_out--;
	pthread_cond_broadcast(&srv.cond);
	pthread_mutex_unlock(&srv.lock);
}

/* A thread cancelled in read(2) (libfuse ends its workers so): out of the list. */
static void read_cancelled(void *arg)
{
	pid_t *tid = arg;

	pthread_mutex_lock(&srv.lock);
	in_read_del(*tid);
	pthread_mutex_unlock(&srv.lock);
}

/* The request this thread read last is one the kernel sends again (FUSE_NOTIFY_RESEND). */
static __thread bool req_resent;

/* The bit the kernel sets in the unique of a request it sends again (Linux 6.9). */
#define UNIQUE_RESEND (1ULL << 63)

bool keeper_request_resent(void)
{
	return req_resent;
}

/*
 * libfuse's read of the device. It keeps the INIT for later servers and the
 * request this thread answers (journal_inflight), and, once the server
 * yields, reads nothing more: the threads wait here until the session has
 * ended, so that no request is read and then dropped. A thread is out of
 * here with a request (n_out) from its read until it comes back, its
 * request answered; the session ends only when none is (yield()).
 * Cancellation (libfuse's end of its workers) only in read(2) itself, and
 * SIGUSR1, which wakes a read for yield(), is blocked everywhere else.
 */
static ssize_t io_read(int fd, void *buf, size_t len, void *userdata)
{
	pid_t tid = (pid_t)syscall(SYS_gettid);
	sigset_t usr1;
	bool tracked;
	ssize_t n;
	int err, cancel;

	(void)userdata;
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &cancel);
	pthread_mutex_lock(&srv.lock);
	if (pthread_getspecific(srv.out_key)) {
		pthread_setspecific(srv.out_key, NULL);
		srv.n_out--;
		pthread_cond_broadcast(&srv.cond);
	}
	while (srv.yielding && !srv.released)
		pthread_cond_wait(&srv.cond, &srv.lock);
	if (srv.yielding) {
		pthread_mutex_unlock(&srv.lock);
		pthread_setcancelstate(cancel, NULL);
		errno = EINTR;
		return -1;
	}
	journal_inflight(0); /* what this thread read before is answered */
	tracked = srv.n_in_read < sizeof(srv.in_read) / sizeof(srv.in_read[0]);
	if (tracked)
		srv.in_read[srv.n_in_read++] = tid;
	pthread_mutex_unlock(&srv.lock);
	sigemptyset(&usr1);
	sigaddset(&usr1, SIGUSR1);
	pthread_sigmask(SIG_UNBLOCK, &usr1, NULL);
	pthread_cleanup_push(read_cancelled, &tid);
	pthread_setcancelstate(cancel, NULL);
	n = read(fd, buf, len);
	err = errno;
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
	pthread_cleanup_pop(0);
	pthread_sigmask(SIG_BLOCK, &usr1, NULL);
	pthread_mutex_lock(&srv.lock);
	if (tracked)
		in_read_del(tid);
	if (n > 0 && pthread_setspecific(srv.out_key, &srv) == 0)
		srv.n_out++;
	pthread_mutex_unlock(&srv.lock);
	req_resent = n >= (ssize_t)sizeof(struct fuse_in_header) &&
		     (((struct fuse_in_header *)buf)->unique & UNIQUE_RESEND);
	if (n >= (ssize_t)sizeof(struct fuse_in_header)) {
		uint32_t op = ((struct fuse_in_header *)buf)->opcode;

		/* those answered: not a forget, an interrupt or a notification's reply */
		if (op != FUSE_FORGET && op != FUSE_BATCH_FORGET && op != FUSE_INTERRUPT &&
			op != FUSE_NOTIFY_REPLY)
			journal_inflight(((struct fuse_in_header *)buf)->unique);
	}
	if (n >= (ssize_t)sizeof(struct fuse_in_header) &&
		((struct fuse_in_header *)buf)->opcode == FUSE_INIT &&
		!__atomic_load_n(&srv.init_seen, __ATOMIC_ACQUIRE)) {
		srv.init_unique = ((struct fuse_in_header *)buf)->unique;
		journal_set_init(buf, (size_t)n);
		__atomic_store_n(&srv.init_seen, true, __ATOMIC_RELEASE);
	}
	pthread_setcancelstate(cancel, NULL);
	errno = err;
	return n;
}

static ssize_t io_writev(int fd, struct iovec *iov, int count, void *userdata)
{
	const struct fuse_out_header *oh = iov[0].iov_base;
	ssize_t n;

	(void)userdata;
	if (__atomic_load_n(&srv.replaying, __ATOMIC_RELAXED)) {
		/* the reply to the INIT replayed: the kernel had it from an earlier server */
		size_t len = 0;
		int i;

		for (i = 0; i < count; i++)
			len += iov[i].iov_len;
		return (ssize_t)len;
	}
	n = writev(fd, iov, count);
	/* the kernel sends nothing else before the INIT's reply: one thread reads and answers it */
	if (n >= 0 && __atomic_load_n(&srv.init_seen, __ATOMIC_ACQUIRE) &&
		!__atomic_load_n(&srv.init_said, __ATOMIC_ACQUIRE) &&
		iov[0].iov_len >= sizeof(*oh) && oh->unique == srv.init_unique) {
		__atomic_store_n(&srv.init_said, true, __ATOMIC_RELEASE);
		journal_init_answered();
		send_msg(srv.sock, 'I', 0, 0, NULL, 0);
	}
	return n;
}

/*
 * A bare reply header to the device: error for request unique, or a
 * notification (unique 0, error its code). 0 or -errno (ENOENT: no such
 * request waits).
 */
static int header_write(int fd, int32_t error, uint64_t unique)
{
	struct fuse_out_header oh = { .len = sizeof(oh), .error = error, .unique = unique };

	return write(fd, &oh, sizeof(oh)) == (ssize_t)sizeof(oh) ? 0 : -errno;
}

static ssize_t io_splice_send(int fdin, off_t *offin, int fdout, off_t *offout, size_t len,
	unsigned int flags, void *userdata)
{
	(void)userdata;
	return splice(fdin, offin, fdout, offout, len, flags);
}

static void on_kick(int sig)
{
	(void)sig; /* only to end a read(2) with EINTR */
}

/*
 * Another server serves now: read no more requests, answer those read, end
 * the loop. A thread blocked in read(2) is woken by a signal; one about to
 * read waits in io_read instead.
 */
static void yield(void)
{
	struct timespec ts = { 0, 5 * 1000 * 1000 };

	log_info("another server has taken over: answering what was read, then exiting");
	pthread_mutex_lock(&srv.lock);
	srv.yielding = true;
	while (srv.n_in_read > 0 || srv.n_out > 0) {
		pid_t tids[64];
		unsigned i, n = srv.n_in_read;

		memcpy(tids, srv.in_read, n * sizeof(tids[0]));
		pthread_mutex_unlock(&srv.lock);
		for (i = 0; i < n; i++)
			syscall(SYS_tgkill, getpid(), tids[i], SIGUSR1);
		/* those answering a request come back to io_read when done */
		pthread_mutex_lock(&srv.lock);
		if (srv.n_out > 0 && srv.n_in_read == 0) {
			pthread_cond_wait(&srv.cond, &srv.lock);
			continue;
		}
		pthread_mutex_unlock(&srv.lock);
		nanosleep(&ts, NULL);
		pthread_mutex_lock(&srv.lock);
	}
	pthread_mutex_unlock(&srv.lock);
	fuse_session_exit(srv.se);
	pthread_mutex_lock(&srv.lock);
	srv.released = true;
	pthread_cond_broadcast(&srv.cond);
	pthread_mutex_unlock(&srv.lock);
}

static void fail_request(uint64_t unique, void *arg)
{
	unsigned *n = arg;

	/* ENOENT: answered after all, before the server died */
	if (header_write(srv.fuse_fd, -EIO, unique) == 0)
		(*n)++;
}

/*
 * What the server that died had read and not answered, as its journal
 * says, ends with EIO; the log says why, and how many.
 */
static void fail_inflight(const char *why)
{
	unsigned failed = 0;

	journal_foreach_inflight(fail_request, &failed);
	log_info("%s: %u requests end with EIO", why, failed);
}

/*
 * What the server that died had read and not answered: the kernel sends it
 * again, or, where it cannot, it ends with EIO.
 */
static void resend(void)
{
	int ret;

	if (!srv.has_resend || getenv("OCIFS_NO_RESEND")) {
		fail_inflight("the kernel cannot send again what the server that died had read "
			      "(no FUSE_NOTIFY_RESEND)");
		return;
	}
	ret = header_write(srv.fuse_fd, NOTIFY_RESEND, 0);
	if (ret)
		log_warn("asking the kernel to send again what the dead server had read: %s",
			strerror(-ret));
	else
		log_info("the kernel sends again what the server that died had not answered");
}

static void *keeper_listen(void *arg)
{
	(void)arg;
	for (;;) {
		struct kmsg m;
		int fds[2], ret = recv_msg(srv.sock, &m, fds);

		if (fds[0] >= 0)
			close(fds[0]);
		if (fds[1] >= 0)
			close(fds[1]);
		if (ret) {
			/* no word will come from the keeper: nothing to wait for */
			pthread_mutex_lock(&srv.lock);
			srv.alone = true;
			pthread_cond_broadcast(&srv.cond);
			pthread_mutex_unlock(&srv.lock);
		}
		if (ret == -EPIPE && !__atomic_load_n(&srv.detaching, __ATOMIC_RELAXED)) {
			log_warn("the keeper (pid %d) is gone: the mount ends with this server",
				(int)srv.keeper);
			return NULL;
		}
		if (ret)
			return NULL;
		if (m.type == 'Y') {
			yield();
			return NULL;
		}
		if (m.type == 'N') {
			/* a successor reads this journal: it must stay the one the keeper holds */
			journal_set_sink(NULL);
		}
		if (m.type == 'G') {
			/*
			 * Not resent: the kernel would send this server's own requests
			 * again too. Those the dead one had read end with EIO.
			 */
			if (m.flags & F_DEAD)
				fail_inflight("the server replaced died before it had answered "
					      "what it had read");
			journal_old_gone();
			pthread_mutex_lock(&srv.lock);
			srv.alone = true;
			pthread_cond_broadcast(&srv.cond);
			pthread_mutex_unlock(&srv.lock);
		}
	}
}

/* Install the custom I/O and, on an initialized connection, replay its INIT. */
static int take_session(struct fuse_session *se, int fuse_fd, bool takeover)
{
	static const struct fuse_custom_io io = {
		.writev = io_writev,
		.read = io_read,
		.splice_send = io_splice_send,
	};
	unsigned char init[512];
	size_t len = takeover ? journal_init(init, sizeof(init)) : 0;
	struct sigaction sa;
	sigset_t usr1;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_kick; /* no SA_RESTART: a blocked read ends */
	sigemptyset(&sa.sa_mask);
	sigaction(SIGUSR1, &sa, NULL);
	/* blocked but in io_read's read(2): the threads made from now on inherit it */
	sigemptyset(&usr1);
	sigaddset(&usr1, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, &usr1, NULL);
	if (pthread_key_create(&srv.out_key, out_ended))
		return -EAGAIN;
	if (fuse_session_custom_io(se, &io, fuse_fd))
		return -EIO;
	if (len >= sizeof(struct fuse_in_header) + sizeof(struct fuse_init_in)) {
		const struct fuse_init_in *in =
			(const void *)(init + sizeof(struct fuse_in_header));
		struct fuse_buf b = { .mem = init, .size = len };

		srv.has_resend =
			(in->flags & FUSE_INIT_EXT) && (in->flags2 & INIT_HAS_RESEND_FLAGS2);
		srv.init_seen = srv.init_said = true;
		srv.replaying = true;
		fuse_session_process_buf(se, &b);
		srv.replaying = false;
	}
	return 0;
}

/* A journal compacted: the keeper holds the new one from now on. */
static int journal_to_keeper(int fd)
{
	return send_msg(srv.sock, 'J', 0, 0, &fd, 1);
}

int keeper_attach(int sock, struct fuse_session *se)
{
	struct kmsg m;
	int fds[2], ret, journal_fd = -1;

	srv.sock = sock;
	srv.se = se;
	ret = send_msg(sock, 'R', 0, 0, NULL, 0);
	if (!ret)
		ret = recv_msg(sock, &m, fds);
	if (!ret && (m.type != 'F' || fds[0] < 0))
		ret = -EPROTO;
	if (ret) {
		log_err("keeper: no mount descriptor: %s", strerror(-ret));
		return ret;
	}
	srv.keeper = m.pid;
	srv.restarts = m.restarts;
	/* taking over from a server still running (an upgrade): not alone until it has exited */
	srv.alone = !(m.flags & F_TAKEOVER) || (m.flags & F_DEAD);
	srv.fuse_fd = fds[0];
	ret = journal_start(fds[1], m.gen, &journal_fd);
	if (ret) {
		log_err("journal: %s", strerror(-ret));
		close(fds[0]);
		return ret;
	}
	ret = send_msg(sock, 'J', 0, 0, &journal_fd, 1); /* the journal's still: it is mapped */
	journal_set_sink(journal_to_keeper);
	if (!ret)
		ret = take_session(se, fds[0], m.flags & F_TAKEOVER);
	if (ret) {
		close(fds[0]);
		return ret;
	}
	if ((m.flags & F_TAKEOVER) && !srv.init_seen)
		log_warn("taking over a connection whose INIT no server answered");
	if (m.flags & F_DEAD) {
		resend();
		journal_old_gone(); /* it is dead: nothing more comes in its journal */
	}
	if (pthread_create(&srv.thread, NULL, keeper_listen, NULL) == 0)
		srv.thread_started = true;
	return 0;
}

void keeper_serving(bool background)
{
	if (srv.sock >= 0)
		send_msg(srv.sock, 'S', 0, 0, NULL, 0);
	if (background)
		detach_stdio();
}

void keeper_wait_alone(void)
{
	if (srv.sock < 0)
		return;
	pthread_mutex_lock(&srv.lock);
	while (!srv.alone && !srv.yielding && !__atomic_load_n(&srv.detaching, __ATOMIC_RELAXED))
		pthread_cond_wait(&srv.cond, &srv.lock);
	pthread_mutex_unlock(&srv.lock);
}

void keeper_crash_point(const char *op)
{
	const char *e = getenv("OCIFS_CRASH_AFTER");

	if (e && strcmp(e, op) == 0 && srv.sock >= 0 && srv.restarts == 0) {
		log_warn("OCIFS_CRASH_AFTER=%s: this server dies before it answers", op);
		raise(SIGKILL);
	}
}

bool keeper_upgrading(void)
{
	bool r;

	if (srv.sock < 0)
		return false;
	pthread_mutex_lock(&srv.lock);
	r = !srv.alone;
	pthread_mutex_unlock(&srv.lock);
	return r;
}

bool keeper_replaced(void)
{
	bool r;

	pthread_mutex_lock(&srv.lock);
	r = srv.yielding;
	pthread_mutex_unlock(&srv.lock);
	return r;
}

pid_t keeper_pid(void)
{
	return srv.keeper;
}

unsigned keeper_restarts(void)
{
	return srv.restarts;
}

void keeper_detach(void)
{
	if (srv.thread_started) {
		/* the listener ends at the socket's shutdown, or has ended (a yield) */
		__atomic_store_n(&srv.detaching, true, __ATOMIC_RELAXED);
		shutdown(srv.sock, SHUT_RDWR);
		pthread_join(srv.thread, NULL);
		srv.thread_started = false;
	}
}

/* ------------------------------------------------------------------ keeper */

/* A server the keeper started. */
struct server {
	pid_t pid;
	int sock; /* -1 once it closed */
	double started;
	double served_at; /* when it said it serves */
	unsigned gen; /* of its ids */
	bool given; /* it has the mount ('F') */
	bool serving;
};

struct keeper {
	char exe[PATH_MAX];
	char **argv;
	int fuse_fd;
	int journal_fd; /* the newest server's */
	bool init_answered;
	struct server cur, next; /* next: taking over from cur (an upgrade) */
	struct server old; /* replaced, finishing what it had read */
	int client; /* who asked for the upgrade, for the answer */
	unsigned restarts;
	unsigned gens; /* generations given so far */
	unsigned quick_deaths; /* servers in a row that died within QUICK s */
	double start_at; /* when the next server starts (no server runs) */
	bool stopping, unmounted, answering;
	bool served; /* a server has served: a later one's failure does not end the mount */
	char *buf; /* requests answered here while no server runs */
	size_t buf_size;
};

#define QUICK 1.0 /* a server dying this soon after it began to serve is a crash loop */
#define BACKOFF_MAX 10.0

static int sig_pipe[2] = { -1, -1 };

static void on_signal(int sig)
{
	unsigned char c = (unsigned char)sig;
	int saved = errno;

	if (write(sig_pipe[1], &c, 1) < 0) {
		/* full: the loop has signals to read anyway */
	}
	errno = saved;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void server_clear(struct server *s)
{
	if (s->sock >= 0)
		close(s->sock);
	memset(s, 0, sizeof(*s));
	s->sock = -1;
}

/* Start a server: this program again, with the keeper's socket in its environment. */
static int spawn(struct keeper *k, struct server *s)
{
	int sv[2];
	pid_t pid;

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv))
		return -errno;
	pid = fork();
	if (pid < 0) {
		close(sv[0]);
		close(sv[1]);
		return -errno;
	}
	if (pid == 0) {
		char env[32];
		int fd = dup(sv[1]); /* without close-on-exec */
		sigset_t all;

		sigemptyset(&all);
		sigprocmask(SIG_SETMASK, &all, NULL);
		snprintf(env, sizeof(env), "%d:%u", fd, k->restarts);
		setenv(ENV_SOCK, env, 1);
		execv(k->exe, k->argv);
		fprintf(stderr, "%s: cannot run %s: %s\n", PACKAGE_NAME, k->exe, strerror(errno));
		_exit(127);
	}
	close(sv[1]);
	memset(s, 0, sizeof(*s));
	/* each server a generation of its own, the first 0 (journal.h) */
	s->gen = k->gens++ % 0x7fff;
	if (k->gens > 0x7fff)
		k->gens = 1;
	s->pid = pid;
	s->sock = sv[0];
	s->started = now();
	return 0;
}

/* Hand s the mount and the journal. */
static int give(struct keeper *k, struct server *s, uint32_t flags)
{
	int fds[2] = { k->fuse_fd, k->journal_fd };

	s->given = true;
	return send_gen(s->sock, 'F', flags, k->restarts, s->gen, fds, k->journal_fd >= 0 ? 2 : 1);
}

/* Whether the connection is gone (unmounted or aborted): the device says POLLERR. */
static bool conn_gone(int fd)
{
	struct pollfd p = { fd, 0, 0 };

	return poll(&p, 1, 0) == 1 && (p.revents & (POLLERR | POLLHUP | POLLNVAL));
}

static void describe(int status, char *buf, size_t cap)
{
	if (WIFSIGNALED(status))
		snprintf(buf, cap, "killed by signal %d (%s)", WTERMSIG(status),
			strsignal(WTERMSIG(status)));
	else
		snprintf(buf, cap, "exited with status %d", WEXITSTATUS(status));
}

/*
 * While no server runs and starting one waits (a crash loop), the keeper
 * answers requests itself with EIO rather than leave callers hanging.
 */
static void answer_eio(struct keeper *k)
{
	for (;;) {
		ssize_t n = read(k->fuse_fd, k->buf, k->buf_size);
		struct fuse_in_header *in = (struct fuse_in_header *)k->buf;

		if (n < (ssize_t)sizeof(*in))
			return; /* EAGAIN: nothing more now */
		if (in->opcode == FUSE_FORGET || in->opcode == FUSE_BATCH_FORGET ||
			in->opcode == FUSE_INTERRUPT)
			continue; /* no reply; the next server's journal keeps those ids */
		if (header_write(k->fuse_fd, -EIO, in->unique) == -ENODEV)
			return;
	}
}

static void answering(struct keeper *k, bool on)
{
	int fl = fcntl(k->fuse_fd, F_GETFL);

	if (on == k->answering || !k->init_answered)
		return;
	if (on && !k->buf) {
		k->buf_size = 2 * 1024 * 1024;
		k->buf = malloc(k->buf_size);
		if (!k->buf)
			return;
	}
	/* O_NONBLOCK is the open file's: no server reads it meanwhile */
	fcntl(k->fuse_fd, F_SETFL, on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK);
	k->answering = on;
	if (on) {
		/* what the dead server had read comes here again, and is answered EIO */
		int ret = header_write(k->fuse_fd, NOTIFY_RESEND, 0);

		if (ret)
			log_debug("keeper: resend: %s", strerror(-ret));
	}
}

static void client_answer(struct keeper *k, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void client_answer(struct keeper *k, const char *fmt, ...)
{
	char msg[256];
	va_list ap;

	if (k->client < 0)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (send(k->client, msg, strlen(msg), MSG_NOSIGNAL) < 0)
		log_debug("keeper: answer to --restart: %s", strerror(errno));
	close(k->client);
	k->client = -1;
}

/* A message from server s. */
static void from_server(struct keeper *k, struct server *s)
{
	struct kmsg m;
	int fds[2], ret = recv_msg(s->sock, &m, fds);

	if (fds[1] >= 0)
		close(fds[1]);
	if (ret) {
		if (fds[0] >= 0)
			close(fds[0]);
		close(s->sock); /* ended: its exit is reaped on SIGCHLD */
		s->sock = -1;
		return;
	}
	switch (m.type) {
	case 'R':
		if (s == &k->next && k->cur.sock >= 0)
			/* the running one compacts its journal no more: the new one reads it */
			send_msg(k->cur.sock, 'N', 0, 0, NULL, 0);
		give(k, s, F_TAKEOVER | (s == &k->next || k->old.pid ? 0 : F_DEAD));
		break;
	case 'J':
		/* the newest server's only: an older one's would hide the newer's ids */
		if (fds[0] >= 0 && s == (k->next.pid ? &k->next : &k->cur)) {
			if (k->journal_fd >= 0)
				close(k->journal_fd);
			k->journal_fd = fds[0];
			fds[0] = -1;
		}
		break;
	case 'I':
		k->init_answered = true;
		break;
	case 'S':
		s->serving = true;
		s->served_at = now();
		k->served = true;
		if (k->restarts)
			log_info(
				"server pid %d serves (restarts: %u), %.0f ms after it was started",
				(int)s->pid, k->restarts, (s->served_at - s->started) * 1000);
		if (s == &k->next) {
			/* the upgrade: the new one serves, the old one stops reading */
			k->old = k->cur;
			k->cur = k->next;
			memset(&k->next, 0, sizeof(k->next));
			k->next.sock = -1;
			send_msg(k->old.sock, 'Y', 0, 0, NULL, 0);
		} else if (k->client >= 0 && !k->old.pid) {
			client_answer(k, "server pid %d serves\n", (int)s->pid);
		}
		break;
	default:
		break;
	}
	if (fds[0] >= 0)
		close(fds[0]);
}

/* Server pid ended with status: which one, and what comes next. */
static void reaped(struct keeper *k, pid_t pid, int status)
{
	char why[96];
	double lived;
	bool served, killed;

	describe(status, why, sizeof(why));
	/* what it said before it died comes first (a journal handed over, its INIT answered) */
	if (pid == k->cur.pid)
		while (k->cur.sock >= 0)
			from_server(k, &k->cur);
	if (pid == k->next.pid)
		while (k->next.sock >= 0)
			from_server(k, &k->next);
	if (pid == k->old.pid) {
		log_info("replaced server pid %d %s", (int)pid, why);
		server_clear(&k->old);
		if (k->cur.sock >= 0)
			send_msg(k->cur.sock, 'G',
				WIFEXITED(status) && !WEXITSTATUS(status) ? 0 : F_DEAD, 0, NULL, 0);
		client_answer(k, "server pid %d serves\n", (int)k->cur.pid);
		return;
	}
	if (pid == k->next.pid) {
		log_err("the new server pid %d %s before it served: the old one goes on", (int)pid,
			why);
		server_clear(&k->next);
		k->restarts--;
		client_answer(k, "error: the new server %s before it served\n", why);
		return;
	}
	if (pid != k->cur.pid)
		return;
	served = k->cur.serving;
	lived = now() - (served ? k->cur.served_at : k->cur.started);
	server_clear(&k->cur);
	if (k->next.pid) {
		/* died while another was taking over: that one serves alone now */
		log_warn("server pid %d %s while pid %d was taking over from it", (int)pid, why,
			(int)k->next.pid);
		k->cur = k->next;
		memset(&k->next, 0, sizeof(k->next));
		k->next.sock = -1;
		/* not given the mount yet: it is given it as after a crash ('R') */
		if (k->cur.given)
			send_msg(k->cur.sock, 'G', F_DEAD, 0, NULL, 0);
		return;
	}
	if (!k->served) {
		/* the first server failed to start: its error is said, the mount ends */
		k->stopping = true;
		return;
	}
	if (k->stopping || k->unmounted || conn_gone(k->fuse_fd)) {
		k->unmounted = k->unmounted || conn_gone(k->fuse_fd);
		log_debug("server pid %d %s", (int)pid, why);
		return;
	}
	/*
	 * A crash loop: dead before serving, or within a second of it but for
	 * a SIGKILL (an operator's, the OOM killer's: not this program's fault).
	 */
	killed = WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
	k->quick_deaths = !served || (lived < QUICK && !killed) ? k->quick_deaths + 1 : 0;
	if (k->quick_deaths <= 1) {
		k->start_at = now();
		log_warn("server pid %d %s after %.1f s: starting another", (int)pid, why, lived);
	} else {
		double wait =
			0.1 * (double)(1U << (k->quick_deaths < 10 ? k->quick_deaths - 1 : 9));

		if (wait > BACKOFF_MAX)
			wait = BACKOFF_MAX;
		k->start_at = now() + wait;
		log_warn("server pid %d %s after %.1f s, %u in a row: next start in %.1f s; until "
			 "then requests fail with EIO",
			(int)pid, why, lived, k->quick_deaths, wait);
		answering(k, true);
	}
}

/* Make a server now (no server runs): a restart. */
static void restart(struct keeper *k)
{
	k->start_at = 0;
	answering(k, false);
	k->restarts++;
	if (spawn(k, &k->cur)) {
		log_err("keeper: cannot start a server: %s", strerror(errno));
		k->quick_deaths++;
		k->start_at = now() + 1;
		answering(k, true);
	}
}

/* `ocifs --restart`: a new server takes over from the running one. */
static void upgrade(struct keeper *k, int client)
{
	struct ucred cr;
	socklen_t len = sizeof(cr);
	char req[16] = "";

	if (getsockopt(client, SOL_SOCKET, SO_PEERCRED, &cr, &len) ||
		(cr.uid != 0 && cr.uid != getuid())) {
		close(client);
		return;
	}
	/* a client that says nothing holds the keeper up a second at most */
	setsockopt(
		client, SOL_SOCKET, SO_RCVTIMEO, &(struct timeval){ 1, 0 }, sizeof(struct timeval));
	if (recv(client, req, sizeof(req) - 1, 0) <= 0 || strncmp(req, "restart", 7) != 0) {
		close(client);
		return;
	}
	if (k->client >= 0 || k->next.pid || k->old.pid || (k->cur.pid && !k->cur.serving)) {
		send(client, "error: a restart is under way\n", 30, MSG_NOSIGNAL);
		close(client);
		return;
	}
	k->client = client;
	if (!k->cur.pid) {
		restart(k); /* none runs (backing off): start one now */
		return;
	}
	k->restarts++;
	if (spawn(k, &k->next)) {
		k->restarts--;
		client_answer(k, "error: cannot start a server: %s\n", strerror(errno));
		return;
	}
	log_info("restart asked: server pid %d takes over from pid %d", (int)k->next.pid,
		(int)k->cur.pid);
}

/* The keeper's control socket: abstract, named after the mount's device. */
static int control_socket(const char *dev, bool listen_on)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	socklen_t len;

	if (fd < 0)
		return -1;
	len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 +
			  (size_t)snprintf(
				  a.sun_path + 1, sizeof(a.sun_path) - 1, "ocifs-keeper/%s", dev));
	if (listen_on ? bind(fd, (struct sockaddr *)&a, len) || listen(fd, 4)
		      : connect(fd, (struct sockaddr *)&a, len)) {
		close(fd);
		return -1;
	}
	return fd;
}

/* The parent of a background keeper: waits for its word, then exits with it. */
static int background(int *report)
{
	int p[2];
	pid_t pid;
	char c = 1;

	if (pipe2(p, O_CLOEXEC))
		return -errno;
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid > 0) {
		close(p[1]);
		if (read(p[0], &c, 1) != 1)
			c = 1;
		if (c)
			waitpid(pid, NULL, 0); /* nothing of it left once the command fails */
		_exit(c);
	}
	close(p[0]);
	setsid();
	*report = p[1];
	return 0;
}

static const struct fuse_lowlevel_ops no_ops;

int keeper_run(struct fuse_args *args, const char *mountpoint, bool foreground, bool debug,
	char **argv, void (*after_mount)(const char *mountpoint))
{
	struct keeper k = { .argv = argv, .fuse_fd = -1, .journal_fd = -1, .client = -1 };
	struct fuse_session *se = NULL;
	char mnt_real[PATH_MAX], dev[32] = "";
	int report = -1, ctl = -1, ret = 1, status;
	static const int sigs[] = { SIGTERM, SIGINT, SIGHUP, SIGCHLD };
	struct sigaction sa;
	ssize_t n;
	size_t i;

	k.cur.sock = k.next.sock = k.old.sock = -1;
	n = readlink("/proc/self/exe", k.exe, sizeof(k.exe) - 1);
	if (n <= 0) {
		fprintf(stderr, "%s: cannot tell its own program: %s\n", PACKAGE_NAME,
			strerror(errno));
		return 1;
	}
	k.exe[n] = '\0';
	if (!realpath(mountpoint, mnt_real)) /* before the mount: stat would wait for INIT */
		snprintf(mnt_real, sizeof(mnt_real), "%s", mountpoint);
	if (!foreground && background(&report))
		return 1;
	if (pipe2(sig_pipe, O_CLOEXEC | O_NONBLOCK))
		return 1;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sa.sa_flags = SA_RESTART;
	sigemptyset(&sa.sa_mask);
	for (i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
		struct sigaction old;

		/* in the foreground a signal ignored at start stays so, as for the server */
		if (foreground && sigaction(sigs[i], NULL, &old) == 0 && old.sa_handler == SIG_IGN)
			continue;
		sigaction(sigs[i], &sa, NULL);
	}
	signal(SIGPIPE, SIG_IGN);

	/* the first server checks the registry before anything is mounted */
	if (spawn(&k, &k.cur))
		goto out;
	{
		struct kmsg m;
		int fds[2];

		if (recv_msg(k.cur.sock, &m, fds) || m.type != 'R') {
			waitpid(k.cur.pid, &status, 0);
			goto out;
		}
	}
	se = fuse_session_new(args, &no_ops, sizeof(no_ops), NULL);
	if (!se || fuse_session_mount(se, mountpoint)) {
		kill(k.cur.pid, SIGTERM);
		waitpid(k.cur.pid, &status, 0);
		goto out;
	}
	k.fuse_fd = fuse_session_fd(se);
	if (after_mount)
		after_mount(mnt_real);
	if (keeper_mount_device(mnt_real, dev, sizeof(dev)) == 0)
		ctl = control_socket(dev, true);
	give(&k, &k.cur, 0);

	while (k.cur.pid || k.next.pid || k.old.pid || (!k.stopping && !k.unmounted)) {
		struct pollfd p[6];
		int np = 0, timeout = -1, ip_sig, ip_ctl = -1, ip_fuse = -1, ip_cur = -1,
		    ip_next = -1, ip_old = -1;
		unsigned char c;
		pid_t pid;

		if (!k.cur.pid && !k.stopping && !k.unmounted) {
			double wait = k.start_at - now();

			if (wait <= 0) {
				restart(&k);
				continue;
			}
			timeout = (int)(wait * 1000) + 1;
		}
		if (ctl < 0 && dev[0] && !k.unmounted) {
			/*
			 * The name is the device's: a keeper of an earlier mount
			 * with the same device may not have exited yet. Tried again
			 * each second.
			 */
			ctl = control_socket(dev, true);
			if (ctl < 0 && (timeout < 0 || timeout > 1000))
				timeout = 1000;
		}
		ip_sig = np;
		p[np++] = (struct pollfd){ sig_pipe[0], POLLIN, 0 };
		if (ctl >= 0) {
			ip_ctl = np;
			p[np++] = (struct pollfd){ ctl, POLLIN, 0 };
		}
		if (!k.unmounted) {
			ip_fuse = np;
			p[np++] = (struct pollfd){ k.fuse_fd, k.answering ? POLLIN : 0, 0 };
		}
		if (k.cur.sock >= 0) {
			ip_cur = np;
			p[np++] = (struct pollfd){ k.cur.sock, POLLIN, 0 };
		}
		if (k.next.sock >= 0) {
			ip_next = np;
			p[np++] = (struct pollfd){ k.next.sock, POLLIN, 0 };
		}
		if (k.old.sock >= 0) {
			ip_old = np;
			p[np++] = (struct pollfd){ k.old.sock, POLLIN, 0 };
		}
		if (poll(p, (nfds_t)np, timeout) < 0 && errno != EINTR)
			break;
		if (p[ip_sig].revents & POLLIN) {
			while (read(sig_pipe[0], &c, 1) == 1) {
				if (c == SIGTERM || c == SIGINT || c == SIGHUP) {
					/* the running servers push what is staged, or forget tags */
					if (k.cur.pid)
						kill(k.cur.pid, c == SIGHUP ? SIGHUP : SIGTERM);
					if (k.next.pid)
						kill(k.next.pid, c == SIGHUP ? SIGHUP : SIGTERM);
				}
				if ((c == SIGTERM || c == SIGINT) && !k.stopping) {
					/*
					 * Unmounted (lazily, as files may be open) while the
					 * server pushes what is staged and exits: what is
					 * open ends with it.
					 */
					k.stopping = true;
					answering(&k, false);
					if (!k.unmounted && !conn_gone(k.fuse_fd))
						fuse_session_unmount(se);
				}
			}
			while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
				reaped(&k, pid, status);
		}
		if (ip_ctl >= 0 && (p[ip_ctl].revents & POLLIN)) {
			int cl = accept4(ctl, NULL, NULL, SOCK_CLOEXEC);

			if (cl >= 0)
				upgrade(&k, cl);
		}
		if (ip_cur >= 0 && (p[ip_cur].revents & (POLLIN | POLLHUP)) && k.cur.sock >= 0)
			from_server(&k, &k.cur);
		if (ip_next >= 0 && (p[ip_next].revents & (POLLIN | POLLHUP)) && k.next.sock >= 0)
			from_server(&k, &k.next);
		if (ip_old >= 0 && (p[ip_old].revents & (POLLIN | POLLHUP)) && k.old.sock >= 0)
			from_server(&k, &k.old);
		if (report >= 0 && k.cur.serving) {
			/* mounted and served: the command that started it returns 0 */
			char ok = 0;

			if (write(report, &ok, 1) < 0) {
				/* the parent is gone: nobody to tell */
			}
			close(report);
			report = -1;
			detach_stdio();
			log_init(true, debug);
		}
		if (ip_fuse >= 0 && (p[ip_fuse].revents & (POLLERR | POLLHUP | POLLNVAL))) {
			k.unmounted = true;
			answering(&k, false);
		} else if (ip_fuse >= 0 && (p[ip_fuse].revents & POLLIN)) {
			answer_eio(&k);
		}
		if (k.unmounted && !k.cur.pid && !k.next.pid && !k.old.pid)
			break;
	}
	ret = k.served ? 0 : 1;
	/* lazily, and nothing when it is gone already: libfuse checks */
	fuse_session_unmount(se);
out:
	if (report >= 0) {
		char bad = 1;

		if (write(report, &bad, 1) < 0) {
			/* the parent is gone */
		}
		close(report);
	}
	client_answer(&k, "error: the mount has ended\n");
	if (ctl >= 0)
		close(ctl);
	if (k.journal_fd >= 0)
		close(k.journal_fd);
	server_clear(&k.cur);
	free(k.buf);
	if (se)
		fuse_session_destroy(se);
	return ret;
}

int keeper_restart(const char *mountpoint)
{
	char parent[PATH_MAX], path[PATH_MAX], dev[32], answer[256];
	const char *base;
	char *copy = strdup(mountpoint), *slash;
	ssize_t n;
	int fd;

	if (!copy)
		return 1;
	/* the parent only: a stat of the mount point itself would ask its server */
	while ((slash = strrchr(copy, '/')) && slash != copy && slash[1] == '\0')
		*slash = '\0';
	slash = strrchr(copy, '/');
	base = slash ? slash + 1 : copy;
	if (slash == copy)
		snprintf(parent, sizeof(parent), "/");
	else if (slash && (*slash = '\0', !realpath(copy, parent)))
		parent[0] = '\0';
	else if (!slash && !getcwd(parent, sizeof(parent)))
		parent[0] = '\0';
	snprintf(path, sizeof(path), "%s/%s", strcmp(parent, "/") ? parent : "", base);
	free(copy);
	if (keeper_mount_device(path, dev, sizeof(dev))) {
		fprintf(stderr, "%s: %s: not a mount point\n", PACKAGE_NAME, path);
		return 1;
	}
	fd = control_socket(dev, false);
	if (fd < 0) {
		fprintf(stderr, "%s: %s: no keeper answers for it (mounted with -o no_keeper?)\n",
			PACKAGE_NAME, path);
		return 1;
	}
	if (send(fd, "restart", 7, MSG_NOSIGNAL) != 7) {
		fprintf(stderr, "%s: %s: %s\n", PACKAGE_NAME, path, strerror(errno));
		close(fd);
		return 1;
	}
	n = recv(fd, answer, sizeof(answer) - 1, MSG_WAITALL);
	close(fd);
	if (n <= 0) {
		fprintf(stderr, "%s: %s: the keeper did not answer\n", PACKAGE_NAME, path);
		return 1;
	}
	answer[n] = '\0';
	if (strncmp(answer, "error: ", 7) == 0) {
		fprintf(stderr, "%s: %s: %s", PACKAGE_NAME, path, answer + 7);
		return 1;
	}
	printf("%s", answer);
	return 0;
}
