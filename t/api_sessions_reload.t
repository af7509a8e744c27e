#!/usr/bin/perl

# No loss on reload and stop: 20 reloads under steady load, then a graceful
# stop, with every record of every worker generation delivered over HTTP
# without a gap, and the totals of exited workers folded into the status.

###############################################################################

use warnings;
use strict;

use Test::More;

use Time::HiRes qw/ time /;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::Nginx;
use Test::Receiver;
use Test::ApiSessions;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $t = Test::Nginx->new()->has(qw/http api_sessions/)->plan(7);

my $rcv = Test::Receiver->new(port => port(8090));

$t->write_file_expand('nginx.conf', <<'EOF');

%%TEST_GLOBALS%%

worker_processes 2;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    # A long flush: what workers hold at exit is delivered by the exit flush,
    # not by the timer.
    api_sessions_export url=http://127.0.0.1:%%PORT_8090%%/v1/records
                        batch=10000 flush=30s timeout=5s;

    server {
        # the kernel spreads connections over the workers
        listen       127.0.0.1:%%PORT_8080%% reuseport;
        server_name  localhost;

        api_sessions on;

        location / {
            return 200 "ok\n";
        }

        location = /status {
            api_sessions off;
            api_sessions_status;
        }
    }
}

EOF

$t->run();

###############################################################################

# two clients, each about 200 requests a second
my @loads = map {
	load_start('/load', port => 8080, dir => $t->testdir(), pause => 0.005)
} 1 .. 2;

my $reloads = 0;
my $started = time();
# each generation of workers serves some of the load before the next
sub served_by_every_worker {
	my @workers = $t->worker_pids();
	wait_status('/status', sub {
		my %captured = map { $_->{pid} => $_->{captured} }
			@{$_[0]{workers}};
		!grep { !$captured{$_} } @workers;
	});
}

for (1 .. 20) {
	served_by_every_worker();
	$reloads++ if $t->reload();
	select undef, undef, undef, 0.1;
}
served_by_every_worker();
note(sprintf('20 reloads in %.1f s', time() - $started));

my ($ok, $failed) = (0, 0);
for my $load (@loads) {
	my ($o, $f) = load_stop($load);
	$ok += $o;
	$failed += $f;
}

is($reloads, 20, '20 reloads');
is($failed, 0, 'no request failed during the reloads');
ok($ok > 100, "load was steady ($ok requests)");

my $s = wait_status('/status', sub { $_[0]{total}{captured} == $ok });
is($s->{total}{captured}, $ok, 'every request captured');

$t->stop();

my @records = $rcv->wait_lines($ok) && $rcv->records();
is(scalar @records, $ok, 'every record delivered');

my $seq = sequences(@records);
ok(keys(%$seq) >= 42, 'records from every worker generation');
is_deeply([map { [$_->{missing}, $_->{duplicated}] } values %$seq],
	[map { [0, 0] } values %$seq], 'no gap, no duplicate in any worker')
	or diag(explain($seq));

###############################################################################
