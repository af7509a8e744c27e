#!/usr/bin/perl

# Tests for ngx_http_api_sessions_module, sessions split by time: the idle
# gap and the maximum duration of api_sessions_zone, one session id from
# both workers, LRU eviction in a small zone, sessions kept across reload,
# the UTC day without a zone, and session ids determined by the secret and
# the session start alone (the same on two separate nginx instances).

###############################################################################

use warnings;
use strict;

use Test::More;

use FindBin;
use lib "$FindBin::Bin/lib";

use JSON::PP;
use Time::HiRes qw/ sleep /;
use Time::Local qw/ timegm /;

use Test::Nginx;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

# five nginx instances: each adds its own "no alerts" and "no crashes"
my $t = Test::Nginx->new()->has(qw/http api_sessions/)->plan(45 + 4 * 2);

my $IDLE = 1000;
my $MAX = 3000;

my $secret1 = "0123456789abcdef0123456789abcdef\n";
my $secret2 = "fedcba9876543210fedcba9876543210\n";

# the zone instance: idle=1s max=3s, two workers

$t->write_file('secret', $secret1);
$t->write_file_expand('nginx.conf', <<'EOF');

%%TEST_GLOBALS%%

worker_processes 2;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    api_sessions_secret secret;
    api_sessions_zone zone=z:1m idle=1s max=3s;
    api_sessions_export file=%%TESTDIR%%/api_sessions.ndjson flush=100ms;
    api_sessions_node zone-node;

    server {
        listen       127.0.0.1:%%PORT_8080%% reuseport;
        server_name  localhost;

        api_sessions on;
        api_sessions_key $arg_k;

        add_header X-Pid $pid always;
        add_header X-Session-Id $api_session_id always;

        location / {
            return 204;
        }

        location = /status {
            api_sessions off;
            api_sessions_status;
        }
    }
}

EOF

$t->run();

# the eviction instance: the smallest zone, a long idle gap

my $e = Test::Nginx->new();

my $e_conf = <<'EOF';

%%TEST_GLOBALS%%

worker_processes 2;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    api_sessions_secret secret;
    api_sessions_zone zone=small:32k idle=1h max=24h;
    api_sessions_export file=%%TESTDIR%%/api_sessions.ndjson flush=100ms;

    server {
        listen       127.0.0.1:%%PORT_8081%%;
        server_name  localhost;

        api_sessions on;
        api_sessions_key $arg_k;

        location / {
            add_header X-Generation GEN;
            return 204;
        }

        location = /status {
            api_sessions off;
            api_sessions_status;
        }
    }
}

EOF

$e->write_file('secret', $secret1);
$e->write_file_expand('nginx.conf', $e_conf =~ s/GEN/1/r)->run();

# three instances without a zone: two nodes sharing the secret, one with
# another secret

my %d;

for my $i (1 .. 3) {
	my $port = 8081 + $i;
	my $d = $d{$i} = Test::Nginx->new();

	$d->write_file('secret', $i == 3 ? $secret2 : $secret1);
	$d->write_file_expand('nginx.conf', <<"EOF")->run();

%%TEST_GLOBALS%%

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    api_sessions_secret secret;
    api_sessions_export file=%%TESTDIR%%/api_sessions.ndjson flush=100ms;
    api_sessions_node node-$i;

    server {
        listen       127.0.0.1:%%PORT_$port%%;
        server_name  localhost;

        api_sessions on;
        api_sessions_key \$arg_k;

        location / {
            return 204;
        }
    }
}

EOF
}

###############################################################################

sub ms {
	my ($text) = @_;

	my ($y, $mo, $d, $h, $mi, $s, $ms) = ($text // '')
		=~ /^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)\.(\d{3})Z$/
		or return undef;

	return timegm($s, $mi, $h, $d, $mo - 1, $y) * 1000 + $ms;
}

sub by_path {
	my (@records) = @_;
	return map { $_->{path} => $_ } @records;
}

sub status {
	my ($port) = @_;
	my $body = http_content(http_get('/status', port => $port));
	return eval { decode_json($body) } // {};
}

# Session starts as the zone's policy gives them for these request times.
sub simulate {
	my (@ts) = @_;

	my ($start, $last, @starts);

	for my $ts (@ts) {
		if (!defined $start || $ts - $last > $IDLE || $ts - $start >= $MAX) {
			$start = $last = $ts;
		}

		$last = $ts if $ts > $last;
		push @starts, $start;
	}

	return @starts;
}

my $zone_expected = 0;

###############################################################################

# idle: requests within the gap share a session; a pause over it starts a
# new session, which starts with its first request

my %header_id;

sub get_id {
	my ($uri) = @_;
	my $reply = http_get($uri);
	$header_id{$uri =~ s/\?.*//r} = http_header($reply, 'X-Session-Id');
	return $reply;
}

get_id("/idle/$_?k=idle-key") for 1 .. 3;
sleep(($IDLE + 600) / 1000);
get_id("/idle/$_?k=idle-key") for 4 .. 5;
$zone_expected += 5;

my %r = by_path($t->wait_records($zone_expected));
my @idle = map { $r{"/idle/$_"} // {} } 1 .. 5;
my @ts = map { ms($_->{ts}) // 0 } @idle;

is(join(' ', map { $_->{session_id} eq $idle[0]{session_id} ? 1 : 0 }
	@idle[0 .. 2]), '1 1 1', 'idle: within the gap, one session');
is(ms($idle[0]{session_start}), $ts[0],
	'idle: session starts with its first request');
ok($ts[3] - $ts[2] > $IDLE, 'idle: paused over the gap');
isnt($idle[3]{session_id}, $idle[0]{session_id},
	'idle: new session after the gap');
is($idle[4]{session_id}, $idle[3]{session_id}, 'idle: new session goes on');
is(ms($idle[3]{session_start}), $ts[3],
	'idle: new session starts after the gap');
is($idle[3]{key_hash}, $idle[0]{key_hash}, 'idle: same key');
is(join(' ', map { $_->{session_key} // 'null' } @idle[0, 3]), '$arg_k $arg_k',
	'idle: label');
is_deeply([ map { $header_id{"/idle/$_"} } 1 .. 5 ],
	[ map { $_->{session_id} } @idle ], 'idle: $api_session_id');

###############################################################################

# max: a busy session is cut after max=3s, and the next one starts with
# the request that went over; each request on its own connection

my (%pids, @busy);

for my $i (1 .. 15) {
	my $reply = get_id("/busy/$i?k=busy-key");
	$pids{http_header($reply, 'X-Pid') // 'none'}++;
	push @busy, "/busy/$i";
	sleep(0.25);
}

$zone_expected += @busy;

%r = by_path($t->wait_records($zone_expected));
my @b = sort { ms($a->{ts}) <=> ms($b->{ts}) } map { $r{$_} // {} } @busy;
@ts = map { ms($_->{ts}) // 0 } @b;
my @gaps = map { $ts[$_] - $ts[$_ - 1] } 1 .. $#ts;
my %busy_ids = map { $_->{session_id} // 'none' => 1 } @b;

is(scalar(grep { $_ > $IDLE } @gaps), 0, 'max: no pause over the idle gap');
ok($ts[-1] - $ts[0] >= $MAX, 'max: busy for longer than max');
is_deeply([ map { ms($_->{session_start}) } @b ], [ simulate(@ts) ],
	'max: session starts');
ok(keys %busy_ids >= 2, 'max: cut into sessions');
is_deeply([ map { $header_id{$_} } @busy ],
	[ map { ($r{$_} // {})->{session_id} } @busy ], 'max: $api_session_id');
is(scalar(grep { ms($_->{session_start}) == $ts[0] } @b),
	scalar(grep { $_ - $ts[0] < $MAX } @ts),
	'max: first session ends at max');

###############################################################################

# one key from both workers: one session id

my @both;

for my $i (1 .. 30) {
	my $reply = http_get("/both/$i?k=both-key");
	$pids{http_header($reply, 'X-Pid') // 'none'}++;
	push @both, "/both/$i";
	last if $i >= 6 && keys %pids >= 2;
}

$zone_expected += @both;

%r = by_path($t->wait_records($zone_expected));
my %both_ids = map { ($r{$_} // {})->{session_id} // 'none' => 1 } @both;
my %both_pids = map { ($r{$_} // {})->{pid} // 'none' => 1 } @both, @busy;

is(scalar keys %both_pids, 2, 'workers: records from both');
is(join(' ', keys %both_ids), ($r{'/both/1'} // {})->{session_id} // 'none',
	'workers: one session id');
is_deeply({ map { $_ => 1 } keys %pids }, \%both_pids,
	'workers: record pids are the workers');

my $z_status = status(8080);
is($z_status->{zone}{entries}, 3, 'status: zone entries');
is($z_status->{zone}{evictions}, 0, 'status: no evictions');

###############################################################################

# reload keeps the zone: the same key within idle goes on in its session

http_get('/reload/1?k=reload-key', port => 8081);
http_get('/reload/2?k=other-key', port => 8081);
%r = by_path($e->wait_records(2));
my $before = $r{'/reload/1'} // {};

$e->write_file_expand('nginx.conf', $e_conf =~ s/GEN/2/r);
ok($e->reload(), 'reload');

my $reply = http_get('/reload/3?k=reload-key', port => 8081);
is(http_header($reply, 'X-Generation'), 2, 'reload: new configuration');

%r = by_path($e->wait_records(3));
my $after = $r{'/reload/3'} // {};

is($after->{session_id}, $before->{session_id},
	'reload: same session after reload');
is($after->{session_start}, $before->{session_start},
	'reload: same session start');
isnt($after->{pid}, $before->{pid}, 'reload: from a new worker');

###############################################################################

# LRU eviction in a small zone: fill it past its capacity; the least
# recently used key starts a new session, a recent one goes on

my $s = status(8081);
my $capacity = $s->{zone}{capacity} // 0;
my $entries = $s->{zone}{entries} // 0;

is($entries, 2, 'eviction: entries before');
ok($capacity > 100 && $capacity < 2000, "eviction: capacity $capacity");

my $fill = $capacity + 20;
my @uris = map { "/fill/$_?k=fill-$_" } 1 .. $fill;

while (my @part = splice @uris, 0, 200) {
	http_keepalive(\@part, port => 8081);
}

%r = by_path($e->wait_records(3 + $fill, timeout => 20));
is(scalar(keys %r), 3 + $fill, 'eviction: every request recorded');

$s = status(8081);
is($s->{zone}{entries}, $capacity, 'eviction: zone full');
is($s->{zone}{evictions}, $entries + $fill - $capacity,
	'eviction: evictions counted');

# reload-key, other-key and fill-1 .. fill-20 are gone, the LRU first;
# fill-30 and the last one are still there

http_get("/evicted/1?k=reload-key", port => 8081);
http_get("/evicted/2?k=fill-$fill", port => 8081);
http_get("/evicted/3?k=fill-30", port => 8081);

%r = by_path($e->wait_records(6 + $fill));

isnt($r{'/evicted/1'}{session_id}, $before->{session_id},
	'eviction: evicted key, new session');
is(ms($r{'/evicted/1'}{session_start}), ms($r{'/evicted/1'}{ts}),
	'eviction: evicted key starts again');
is($r{'/evicted/2'}{session_id}, $r{"/fill/$fill"}{session_id},
	'eviction: recent key goes on');
is($r{'/evicted/3'}{session_id}, $r{'/fill/30'}{session_id},
	'eviction: older key not evicted goes on');
is($r{'/evicted/1'}{key_hash}, $before->{key_hash},
	'eviction: same key hash');
is(status(8081)->{zone}{evictions}, $entries + $fill - $capacity + 1,
	'eviction: re-inserting evicts one more');

###############################################################################

# no zone: one session per key and UTC day, determined by the secret and
# the start alone

my %node;

for my $i (1 .. 3) {
	http_get("/det/$i?k=det-key", port => 8081 + $i);
	http_get("/det/$i/again?k=det-key", port => 8081 + $i);
	%r = by_path($d{$i}->wait_records(2));
	$node{$i} = [ $r{"/det/$i"} // {}, $r{"/det/$i/again"} // {} ];
}

my ($d1, $d2, $d3) = map { $node{$_}[0] } 1 .. 3;

like($d1->{session_start} // '', qr/T00:00:00\.000Z$/,
	'no zone: session starts at UTC midnight');
is(substr($d1->{session_start} // '', 0, 10), substr($d1->{ts} // 'x', 0, 10),
	'no zone: on the day of the request');
is($node{1}[1]{session_id}, $d1->{session_id},
	'no zone: same key, same session');
is(join(' ', map { $_->{node} // 'null' } $d1, $d2), 'node-1 node-2',
	'two nodes');
is("$d2->{key_hash} $d2->{session_id}", "$d1->{key_hash} $d1->{session_id}",
	'two nodes, one secret: same key hash and session id');
isnt($d3->{key_hash}, $d1->{key_hash}, 'other secret: other key hash');
isnt($d3->{session_id}, $d1->{session_id}, 'other secret: other session id');
# the key hash does not depend on how sessions are split: the zone instance
# has the same secret, and a session id of its own for its own start

http_get('/det/zone?k=det-key');
%r = by_path($t->wait_records($zone_expected + 1));

is($r{'/det/zone'}{key_hash}, $d1->{key_hash}, 'zone and no zone: same key hash');
isnt($r{'/det/zone'}{session_id}, $d1->{session_id},
	'zone and no zone: other start, other session id');

###############################################################################
