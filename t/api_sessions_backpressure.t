#!/usr/bin/perl

# A receiver that is down or never answers costs the request path nothing:
# requests are as fast as before, a full queue drops and counts (with a
# notice at most once a second), the sequence numbers show exactly the
# records lost, and a stuck receiver delays a graceful stop by at most
# the export timeout.

###############################################################################

use warnings;
use strict;

use Test::More;

use FindBin;
use lib "$FindBin::Bin/lib";

use Time::HiRes qw/ time /;

use Test::Nginx;
use Test::Receiver;
use Test::ApiSessions;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $t = Test::Nginx->new()->has(qw/http api_sessions/)->plan(11);

my $rcv = Test::Receiver->new(port => port(8090));

$t->write_file_expand('nginx.conf', <<'EOF');

%%TEST_GLOBALS%%

worker_processes 1;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    api_sessions_export url=http://127.0.0.1:%%PORT_8090%%/v1/records
                        batch=1 flush=50ms queue=5 timeout=1s;

    server {
        listen       127.0.0.1:%%PORT_8080%%;
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

sub timed_requests {
	my ($n, $path, $pause) = @_;
	my $worst = 0;
	for (1 .. $n) {
		my $start = time();
		my $r = http_get($path);
		die "no answer\n" unless $r && http_status($r) == 200;
		my $took = time() - $start;
		$worst = $took if $took > $worst;
		select undef, undef, undef, $pause if $pause;
	}
	return $worst;
}

# paced, so that the tiny queue never fills while the receiver answers
my $baseline = timed_requests(20, '/baseline', 0.02);
is(scalar($rcv->wait_lines(20)), 20, 'baseline delivered, nothing dropped');

# blackhole: the exporter waits out its timeout, the requests do not wait

$rcv->mode('blackhole');
my $worst = timed_requests(40, '/blackhole');
ok($worst < 0.2, sprintf('requests not slowed by a blackhole receiver '
	. '(worst %.1f ms, baseline worst %.1f ms)', $worst * 1000, $baseline * 1000));

my $sent = 40;

my $s = wait_status('/status', sub { $_[0]{total}{dropped} > 0 });
ok($s->{total}{dropped} > 0, 'queue full: records dropped');

# The queue may have filled before the exporter looked at it (an idle queue is
# looked at every 5 ms): then the slot it frees by taking the first record is
# filled by the next request.
for (1 .. 20) {
	last if $s->{total}{queued} == 5 + 1;
	timed_requests(1, '/blackhole');
	$sent++;
	select undef, undef, undef, 0.05;
	$s = wait_status('/status', sub { 1 });
}
is($s->{total}{queued}, 5 + 1, 'queue holds queue= records plus the one in flight');
ok(identity($s->{total}), 'identity while the receiver hangs');
ok(wait_log($t, qr/\[notice\].*api_sessions: export queue is full, \d+ records dropped/),
	'notice about the full queue');
my @notices = $t->read_file('error.log') =~ /export queue is full, (\d+) records dropped/g;
ok(@notices < 10, 'notice rate-limited (' . scalar(@notices) . ' for '
	. $s->{total}{dropped} . ' drops)');

# back: what was queued is delivered, the sequence gaps are the drops

$rcv->mode('ok');
$s = wait_status('/status', sub { $_[0]{total}{queued} == 0 }, timeout => 20);
# A batch whose POST timed out may still have been stored by the receiver:
# delivery is at least once, so count distinct records.
my %got = map { $_->{seq} => $_->{path} } $rcv->records();
my $missing = grep { !$got{$_} } 1 .. $s->{total}{captured};
is($missing, $s->{total}{dropped}, 'sequence gaps are exactly the dropped records');
my $delivered = grep { $_ eq '/blackhole' } values %got;
is($delivered + $s->{total}{dropped}, $sent, 'delivered plus dropped is all');
ok(identity($s->{total}), 'identity after recovery');

# a stuck receiver delays a graceful stop by at most timeout=

$rcv->mode('blackhole');
http_get('/last');
select undef, undef, undef, 0.3;
my $start = time();
$t->stop();
my $took = time() - $start;
ok($took < 3, sprintf('graceful stop took %.1f s with a hanging receiver', $took));

###############################################################################
