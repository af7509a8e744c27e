#!/usr/bin/perl

# The disk spool: batches that cannot be delivered wait on disk and are
# replayed, oldest first, when the receiver is back; spools of workers that
# exited (reload) are adopted by the new ones; a full spool drops its oldest
# batches and counts them.

###############################################################################

use warnings;
use strict;

use Test::More;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::Nginx;
use Test::Receiver;
use Test::ApiSessions;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $t = Test::Nginx->new()->has(qw/http api_sessions/)->plan(21);

my $rcv = Test::Receiver->new(port => port(8090));

my $conf = <<'EOF';

%%TEST_GLOBALS%%

worker_processes 2;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    api_sessions_export url=http://127.0.0.1:%%PORT_8090%%/v1/records
                        spool=%%TESTDIR%%/spool spool_max=SPOOL_MAX
                        batch=5 flush=100ms timeout=1s;

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

$t->write_file_expand('nginx.conf', $conf =~ s/SPOOL_MAX/64m/r);
$t->run();

# After an outage the exporter's next attempt may be a whole backoff step away
# (10 s at most), and the spool replays after it: waits for delivery allow for
# that on a busy machine.
my $AFTER_OUTAGE = 40;

###############################################################################

# outage: everything goes to the spool

$rcv->mode('down');

http_get("/outage?n=$_") for 1 .. 30;

my $s = wait_status('/status', sub { $_[0]{total}{spooled} == 30 });
is($s->{total}{spooled}, 30, 'all records spooled');
is($s->{total}{queued}, 0, 'nothing held in memory');
ok($s->{total}{export_errors} > 0, 'failed attempts counted');
ok(identity($s->{total}), 'identity during the outage');
my @batches = glob($t->testdir() . '/spool/*/*.batch');
ok(@batches >= 6, 'spooled batches on disk');

# the receiver is back: replayed oldest first, every record exactly once

$rcv->mode('ok');
my @records = $rcv->wait_lines(30, timeout => $AFTER_OUTAGE) && $rcv->records();
is(scalar @records, 30, 'all spooled records replayed');
my $seq = sequences(@records);
is_deeply([map { [$_->{missing}, $_->{duplicated}] } values %$seq],
	[map { [0, 0] } values %$seq], 'no gaps, no duplicates')
	or diag(explain($seq));
my %order_ok = map { $_ => 1 } keys %$seq;
my %last;
for my $r (@records) {
	$order_ok{$r->{pid}} = 0 if ($last{$r->{pid}} // 0) > $r->{seq};
	$last{$r->{pid}} = $r->{seq};
}
is_deeply([grep { !$order_ok{$_} } keys %order_ok], [], 'oldest first');

$s = wait_status('/status', sub { $_[0]{total}{spooled} == 0 },
	timeout => $AFTER_OUTAGE);
is($s->{total}{exported}, 30, 'replay counted as exported');
ok(identity($s->{total}), 'identity after the replay');
is(scalar(() = glob($t->testdir() . '/spool/*/*.batch')), 0, 'spool emptied');

# a reload during an outage: the old workers exit with their spool, the new
# workers adopt it and replay it

$rcv->mode('down');
http_get("/before-reload?n=$_") for 1 .. 10;
wait_status('/status', sub { $_[0]{total}{spooled} == 10 });
my %old = map { $_ => 1 } $t->worker_pids();

ok($t->reload(), 'reloaded during the outage');
$s = wait_status('/status', sub { !grep { $old{$_->{pid}} } @{$_[0]{workers}} });
is($s->{total}{spooled}, 10, 'exited workers\' spool still counted');

$rcv->mode('ok');
$rcv->wait_lines(40, timeout => $AFTER_OUTAGE);
my @replayed = grep { $_->{path} eq '/before-reload' } $rcv->records();
is(scalar @replayed, 10, 'adopted spool replayed by the new workers');
$s = wait_status('/status', sub { $_[0]{total}{exported} == 40 },
	timeout => $AFTER_OUTAGE);
is($s->{total}{spooled}, 0, 'nothing left spooled');
ok(identity($s->{total}), 'identity after adoption');

# a small spool keeps the newest batches and drops the oldest

$t->write_file_expand('nginx.conf', $conf =~ s/SPOOL_MAX/6k/r);
$t->reload();

$rcv->mode('down');
http_get("/small?n=$_") for 1 .. 40;
$s = wait_status('/status', sub {
	$_[0]{total}{queued} == 0 && $_[0]{total}{captured} == 80 });
ok($s->{total}{dropped} > 0, 'full spool drops');
ok(identity($s->{total}), 'identity with a full spool');

$rcv->mode('ok');
$s = wait_status('/status', sub { $_[0]{total}{spooled} == 0 },
	timeout => $AFTER_OUTAGE);
my @small = grep { $_->{path} eq '/small' } $rcv->records();
is(scalar(@small) + $s->{total}{dropped}, 40, 'kept plus dropped is everything');
# the workers serving since the last reload saw only these requests: what each
# kept must be the tail of its sequence
my %captured = map { $_->{pid} => $_->{captured} } @{$s->{workers}};
my %kept;
push @{$kept{$_->{pid}}}, $_->{seq} for @small;
my @not_tail = grep {
	my @seqs = sort { $a <=> $b } @{$kept{$_}};
	"@seqs" ne join(' ', $captured{$_} - @seqs + 1 .. $captured{$_});
} keys %kept;
is_deeply(\@not_tail, [], 'newest batches kept') or diag(explain(\%kept, \%captured));
ok(wait_log($t, qr/\[warn\].*spool is full, \d+ oldest spooled records dropped/),
	'eviction logged');

###############################################################################
