package Test::Explorer;

# The explorer (build/api-sessions, or TEST_API_SESSIONS_EXPLORER) as a process
# beside the test's nginx, for the tests that deliver to it.
#
#	my $explorer = explorer_binary();	# before plan(): fails or skips
#	my $t = Test::Nginx->new()->...->plan(3);
#	explorer_start($t, 8707, '--token', 's3cret');
#
# A missing explorer fails the test: only API_SESSIONS_SKIP_EXPLORER=1 skips it.

###############################################################################

use warnings;
use strict;

use Exporter qw/ import /;
use FindBin;
use POSIX ();
use Time::HiRes qw/ sleep time /;

use Test::More ();
use Test::Nginx;

our @EXPORT = qw/ explorer_binary explorer_start /;

###############################################################################

my $BINARY = $ENV{TEST_API_SESSIONS_EXPLORER}
	// "$FindBin::Bin/../build/api-sessions";

my @children;

END {
	# Localised: this block's waitpid must not change the test's exit code.
	local $?;
	for my $pid (@children) {
		kill 'TERM', $pid;
		waitpid($pid, 0);
	}
}

# The explorer's path; without it the test ends here, as a failure unless
# skipping was asked for.
sub explorer_binary {
	return $BINARY if -x $BINARY;

	Test::More::plan(skip_all => "no $BINARY, API_SESSIONS_SKIP_EXPLORER=1")
		if ($ENV{API_SESSIONS_SKIP_EXPLORER} // '') eq '1';
	Test::More::plan(tests => 1);
	Test::More::fail("$BINARY is needed (scripts/build, or set "
		. "TEST_API_SESSIONS_EXPLORER); API_SESSIONS_SKIP_EXPLORER=1 skips "
		. "this test");
	exit;
}

# `api-sessions serve` with its database and log (explorer.log) in the test's
# directory, on the loopback port that placeholder $port names, with @args;
# returns once it answers, and is stopped when the test exits.
sub explorer_start {
	my ($t, $port, @args) = @_;

	# Taken before the fork, so that the test and the explorer agree on it.
	my $listen = '127.0.0.1:' . port($port);

	my $pid = fork() // die "fork: $!\n";
	if ($pid == 0) {
		open STDERR, '>', $t->testdir() . '/explorer.log';
		exec(explorer_binary(), 'serve',
			'--db', $t->testdir() . '/sessions.db',
			'--listen', $listen, @args)
			or POSIX::_exit(1);
	}
	push @children, $pid;

	my $deadline = time() + patience(10);
	until (http_get('/api/sessions', port => $port)) {
		die "the explorer did not answer on port $port; see "
			. $t->testdir() . "/explorer.log\n" if time() > $deadline;
		sleep(0.05);
	}

	return $pid;
}

###############################################################################

1;

###############################################################################
