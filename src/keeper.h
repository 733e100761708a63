/*
 * The keeper: a small process that mounts, holds the mount's /dev/fuse
 * descriptor and the journal (journal.h), and runs the server, this same
 * program, which answers the kernel's requests. When the server dies, the
 * keeper starts another on the same descriptor; the mount never goes away.
 * `ocifs --restart MOUNTPOINT` asks it for a new server (an upgrade).
 *
 * Keeper and server talk over a socket pair (SOCK_SEQPACKET), one message
 * at a time, descriptors passed with SCM_RIGHTS:
 *
 *   server -> keeper  'R'  ready to serve (the first: its registry answered)
 *   keeper -> server  'F'  the mount's descriptor and the journal, and flags
 *   server -> keeper  'J'  the server's new journal (it holds it from now on)
 *   server -> keeper  'I'  the kernel's INIT is answered
 *   server -> keeper  'S'  serving
 *   keeper -> server  'Y'  stop reading: another server has taken over
 *   keeper -> server  'G'  the server that was replaced has exited
 *
 * A server taking over a connection whose INIT an earlier one answered
 * begins its session without one (libfuse expects INIT first): it hands
 * libfuse the INIT the kernel sent, kept in the journal, and drops the
 * reply. All of it is in keeper.c.
 */
#ifndef OCIFS_KEEPER_H
#define OCIFS_KEEPER_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct fuse_args;
struct fuse_session;

/*
 * The server's end of its keeper's socket, from the environment (then
 * unset), or -1: not started by a keeper. *restarts: how many servers came
 * before this one.
 */
int keeper_server_sock(unsigned *restarts);

/*
 * Be the keeper of a mount of mountpoint with the FUSE options args: start
 * servers (this program, run again with argv and the keeper's socket),
 * restart them, and unmount once asked to stop. Without foreground, the
 * caller's process returns once the mount is up (the keeper runs on in
 * the background; debug: its log says more). after_mount(mountpoint) runs
 * once mounted. Returns the exit status.
 */
int keeper_run(struct fuse_args *args, const char *mountpoint, bool foreground, bool debug,
	char **argv, void (*after_mount)(const char *mountpoint));

/* `ocifs --restart MOUNTPOINT`: ask its keeper for a new server. Exit status. */
int keeper_restart(const char *mountpoint);

/*
 * Server: tell the keeper it is ready, take the mount's descriptor and the
 * journal, and set se on them; a server taking over replays the INIT and
 * has the kernel send again what the dead server had not answered. Before
 * se's loop. 0 or -errno.
 */
int keeper_attach(int sock, struct fuse_session *se);
/* Server: its loop starts now; background: its stdio goes to /dev/null (it logs to syslog). */
void keeper_serving(bool background);
/*
 * Server: wait until no earlier server runs (one replaced by this one
 * exits once it has answered what it had read): what it left on disk is
 * this one's then (the drafts in the staging area). At once without a keeper.
 */
void keeper_wait_alone(void);
/*
 * Server: the request this thread answers is one the kernel sends again
 * (FUSE_NOTIFY_RESEND): a server that died may have done it already.
 */
bool keeper_request_resent(void);
/*
 * Server, for tests: with OCIFS_CRASH_AFTER=op in the environment, the
 * first server of a keeper kills itself (SIGKILL) once op is done and
 * before it answers.
 */
void keeper_crash_point(const char *op);
/* Server: it takes over from a server still running (an upgrade), which has not exited yet. */
bool keeper_upgrading(void);
/*
 * Server: another server has taken over from this one. What this one holds
 * (writers, drafts) is the new one's: not to be released nor pushed here.
 */
bool keeper_replaced(void);
/* Server: the keeper's pid and the servers before this one (stats.json). */
pid_t keeper_pid(void);
unsigned keeper_restarts(void);
/* Server: its loop has ended; stop listening to the keeper. */
void keeper_detach(void);

/* The device (major:minor) of the mount at path (absolute, resolved), from mountinfo. 0 or -errno. */
int keeper_mount_device(const char *path, char *dev, size_t cap);

#endif
